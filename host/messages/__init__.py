# Runs on CPython (host): member messages — an outbox in the store, channels that deliver it.
"""Member messages: ``outbox`` queues them (receipts from the admin writes; birthday
greetings, win-back coupons and points about to expire from the daily ``queue_due``),
``channels`` deliver them (SMTP e-mail, an HTTP webhook for SMS/WeChat gateways), ``sender``
drains the outbox with retries (``tapkiosk messages send``)."""
