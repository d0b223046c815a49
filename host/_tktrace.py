import os, time
_f = open(os.environ["TK_TRACE"], "a", buffering=1) if os.environ.get("TK_TRACE") else None
def st(name):
    if _f is not None:
        _f.write(f"{name} {time.perf_counter():.7f}\n")
