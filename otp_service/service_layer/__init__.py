"""Use cases: generate and verify, tying the OTP rules to a store, a channel and the user directory."""
