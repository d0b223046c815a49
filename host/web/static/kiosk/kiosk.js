// The kiosk touch screen (served by host/web/routes/kiosk.py): menu -> tap your card -> result.
// The sales-scoped API token comes in the URL fragment (#token=...), never sent to the server
// as part of the URL, and is kept in this tab's sessionStorage only.
"use strict";
(function () {
  const device = document.body.dataset.device;
  const RESULT_MS = 6000;
  const REASONS = {
    insufficient_balance: "余额不足 Balance too low", unknown_card: "未知卡 Unknown card",
    blocked: "卡已冻结 Card blocked", lost: "卡已挂失 Card reported lost",
    expired: "卡已过期 Card expired", member_inactive: "会员已停用 Membership suspended",
    no_sale: "交易已结束 Sale ended", offline: "读卡器离线 Reader offline",
    invalid_amount: "金额无效 Invalid amount", closed: "未营业 Closed",
    duplicate: "请稍候 Already done", internal: "系统错误 Error, see staff",
    cancelled: "已取消 Cancelled", expired_sale: "超时 Timed out",
  };
  const el = (id) => document.getElementById(id);
  const fen = (n) => (n / 100).toFixed(2);
  const cart = new Map();
  let products = [];
  let current = null;
  // "Use my points": the next sale asks to pay part with points (policy [points_payment]).
  let usePoints = false;

  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("tapkiosk-token", hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  const token = sessionStorage.getItem("tapkiosk-token");

  function newKey() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return "kiosk-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  async function api(method, path, body, key) {
    const headers = { Authorization: "Bearer " + token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (key) headers["Idempotency-Key"] = key;
    const r = await fetch("/v1" + path, { method, headers,
      body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    return data;
  }

  function show(id) {
    for (const s of document.querySelectorAll(".screen")) s.hidden = s.id !== id;
  }

  function total() {
    let t = 0;
    for (const p of products) t += (cart.get(p.id) || 0) * p.price_fen;
    return t;
  }

  function render() {
    const box = el("products");
    box.textContent = "";
    for (const p of products) {
      const b = document.createElement("button");
      b.className = "product";
      b.dataset.product = p.id;
      const q = cart.get(p.id) || 0;
      b.innerHTML = "";
      b.append(p.name);
      const price = document.createElement("span");
      price.className = "price";
      price.textContent = fen(p.price_fen) + (q ? "  ×" + q : "");
      b.append(price);
      b.onclick = () => { cart.set(p.id, Math.min(99, q + 1)); render(); };
      box.append(b);
    }
    const t = total();
    el("total").textContent = "合计 Total " + fen(t);
    el("total").dataset.fen = String(t);
    el("pay").disabled = t === 0;
  }

  async function pay() {
    el("pay").disabled = true;
    el("error").textContent = "";
    const items = [];
    for (const [product, qty] of cart) if (qty) items.push({ product, qty });
    const key = newKey();
    try {
      const body = { items };
      if (usePoints) body.points = "max";      // as many as the site's policy allows
      current = await api("POST", "/devices/" + device + "/sales", body, key);
    } catch (e) {
      el("error").textContent = e.message;
      render();
      return;
    }
    el("wait-amount").textContent = fen(current.amount_fen);
    show("waiting");
    follow(current.id);
  }

  async function follow(id) {
    let sale = current;
    while (sale && sale.state === "armed" && current && current.id === id) {
      try {
        sale = await api("GET", "/sales/" + id + "?wait=20");
      } catch (e) {
        el("error").textContent = e.message;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    if (current && current.id === id) result(sale);
  }

  function result(sale) {
    const box = el("result");
    const r = sale.result || {};
    let title, detail = "";
    if (sale.state === "paid") {
      title = "支付成功 Paid " + fen(r.charged_fen || 0);
      detail = "余额 Balance " + fen(r.balance_fen || 0) + " · +" + (r.points_earned || 0) +
        " 积分 points";
      if (r.points_paid) {
        detail = "积分 " + r.points_paid + " 抵 Points paid " + fen(r.points_paid_fen) +
          " · " + detail;
      }
    } else {
      const why = sale.state === "expired" ? "expired_sale" : (sale.reason || sale.state);
      title = REASONS[why] || why;
      detail = r.text || "";
    }
    box.className = "screen " + (sale.state === "paid" ? "paid" : "denied");
    box.dataset.state = sale.state;
    el("result-title").textContent = title;
    el("result-detail").textContent = detail;
    show("result");
    current = null;
    cart.clear();
    setUsePoints(false);
    setTimeout(() => { if (!current) { render(); show("menu"); } }, RESULT_MS);
  }

  function setUsePoints(on) {
    usePoints = on;
    el("use-points").setAttribute("aria-pressed", on ? "true" : "false");
  }
  el("use-points").onclick = () => setUsePoints(!usePoints);
  el("pay").onclick = pay;
  el("clear").onclick = () => { cart.clear(); render(); };
  el("cancel").onclick = async () => {
    if (!current) return;
    try { await api("DELETE", "/sales/" + current.id); } catch (e) {
      el("error").textContent = e.message;
    }
  };

  if (!token) {
    el("error").textContent = "没有令牌 No token: open this page as /kiosk/" + device + "#token=...";
    return;
  }
  api("GET", "/products?kind=kiosk").then((d) => { products = d.products; render(); })
    .catch((e) => { el("error").textContent = e.message; });
})();
