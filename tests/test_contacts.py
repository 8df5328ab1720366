"""Email and phone: validation, one normal form, masking."""
from __future__ import annotations

import pytest

from otp_service.domain.contacts import ContactType, mask, normalise_email, normalise_phone
from otp_service.domain.errors import OtpError


def test_email_normal_form_is_trimmed_lower_case():
    assert normalise_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"


def test_phone_normal_form_is_e164():
    assert normalise_phone("098765 43210", "IN") == "+919876543210"
    assert normalise_phone("+44 20 7946 0958", "IN") == "+442079460958"


@pytest.mark.parametrize("raw", ["", "x" * 300 + "@a.com", "a@b", "a@@b.com"])
def test_bad_emails_are_invalid_email(raw):
    with pytest.raises(OtpError) as caught:
        normalise_email(raw)
    assert caught.value.err == "INVALID_EMAIL"


def test_type_is_case_insensitive():
    assert ContactType.parse(" Phone ") is ContactType.PHONE


def test_masks_hide_all_but_a_few_characters():
    assert mask("email", "ada.lovelace@example.com") == "a***@e***.com"
    assert mask("phone", "+919876543210") == "+91********10"
