"""The shared core every capability builds on: settings, clock, logging, crypto, errors, policy gate."""
