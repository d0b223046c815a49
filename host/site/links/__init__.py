# Runs on CPython (host): the daemon's links — serial (COBS frames), MQTT and a host-attached NFC reader.
"""Links carry packets between devices and :class:`host.site.service.Service`.

Each link runs its own thread(s), hands every received packet to ``Service.handle`` with a
``send`` callable for the reply, and reconnects on its own when its transport goes away.
"""
