"""WeChat Pay API v3 simulator: `python -m infra.simulators.wechatpay`.

Speaks the real wire protocol (signed requests and responses, AES-256-GCM notifications resent on
WeChat's 24-hour schedule, refunds that answer PROCESSING and finish later, the backtick trade
bill) so payment-core's adapter runs the maintained `wechatpayv3` SDK against it unchanged. Test
controls live under /sim (pay, refunds/finish, faults, notifications, health); settings in
simulator.WechatPaySimSettings.
"""
