"""Payment channels behind one port (`ports.PaymentChannel`): WeChat Pay through its SDK, and an
in-memory fake. One module per outside party; each maps the party's statuses exhaustively."""
