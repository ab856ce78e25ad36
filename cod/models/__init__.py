"""Model definitions: condition codec, CoD-Lite one-step codec."""
