"""Everything that talks to the outside: stores, delivery channels, the user directory, encryption keys."""
