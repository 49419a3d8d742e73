"""OAuth protocol rules, one module per specification. Pure: no I/O here."""
