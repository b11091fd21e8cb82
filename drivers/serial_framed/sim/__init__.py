"""The framed-serial simulator."""
