"""Alipay Open Platform simulator (当面付 / 统一收单): `python -m infra.simulators.alipay`.

Speaks the real wire protocol (RSA2-signed gateway requests verified against the app's public key,
answers signed over the exact inner JSON, form-encoded signed trade_status_sync notifications
retried until the merchant answers `success`, the GBK zip trade bill) so payment-core's adapter runs
the unmodified `python-alipay-sdk` against it. Test controls live under /sim (pay, refunds/finish,
faults, notifications, health); settings in simulator.AlipaySimSettings.
"""
