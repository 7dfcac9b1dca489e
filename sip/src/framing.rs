//! Framing SIP messages on stream transports by Content-Length (RFC 3261 §18.3).
