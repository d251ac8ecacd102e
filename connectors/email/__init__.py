"""E-mail as a channel: a mailbox read over IMAP, answers sent over SMTP (docs/channels.md)."""
