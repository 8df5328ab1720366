"""The OTP model: contacts, codes and the rules of generate and verify. No Flask, no database, no clock."""
