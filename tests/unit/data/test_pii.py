"""Golden tests for every PII detector, with valid and invalid checksums."""

from __future__ import annotations

import pytest

from ayar.data.pii import find_pii, iban_valid, luhn_valid, redact_pii, tckn_valid


def _types(text: str) -> list[str]:
    return [m.type for m in find_pii(text)]


@pytest.mark.parametrize("iban", ["TR330006100519786457841326", "DE89370400440532013000", "GB82WEST12345698765432"])
def test_iban_valid_checksums(iban: str) -> None:
    assert iban_valid(iban)
    assert _types(f"IBAN: {iban}.") == ["IBAN"]


def test_iban_with_spaces_and_following_capital_word() -> None:
    text = "Hesap TR33 0006 1005 1978 6457 8413 26 ADRES Ankara"
    (match,) = find_pii(text)
    assert match.type == "IBAN"
    assert match.text == "TR33 0006 1005 1978 6457 8413 26"


@pytest.mark.parametrize("iban", ["TR330006100519786457841327", "DE89370400440532013001", "TR3300061005197864578413"])
def test_iban_bad_checksum_or_length_is_not_a_hit(iban: str) -> None:
    assert not iban_valid(iban)
    assert "IBAN" not in _types(f"IBAN: {iban}")


@pytest.mark.parametrize("card", ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"])
def test_card_luhn_valid(card: str) -> None:
    assert luhn_valid(card)
    assert _types(f"kart {card} ile") == ["CARD"]


@pytest.mark.parametrize("card", ["4111 1111 1111 1112", "5500-0000-0000-0005"])
def test_card_luhn_invalid_is_not_a_hit(card: str) -> None:
    assert not luhn_valid(card)
    assert "CARD" not in _types(f"kart {card} ile")


def test_tckn_check_digits() -> None:
    assert tckn_valid("10000000146")
    assert _types("T.C. Kimlik No: 10000000146") == ["TCKN"]
    for bad in ("10000000147", "10000000136", "01000000146"):
        assert not tckn_valid(bad)
        assert _types(f"T.C. Kimlik No: {bad}") == []


@pytest.mark.parametrize(
    "phone",
    ["+90 532 123 45 67", "0532 123 45 67", "0 (532) 123-45-67", "+905321234567", "0212 555 12 34",
     "+1 415 555 2671", "+44 20 7946 0958"],
)
def test_phone_turkish_and_international(phone: str) -> None:
    (match,) = find_pii(f"Ara: {phone} lütfen")
    assert (match.type, match.text) == ("PHONE", phone)


@pytest.mark.parametrize("text", ["12 + 35 = 47", "2024-01-15", "1234567", "Skor 3-2, +5 puan", "x[::2]", "12:30:45"])
def test_ordinary_numbers_are_not_pii(text: str) -> None:
    assert find_pii(text) == []


def test_email() -> None:
    (match,) = find_pii("Yaz: ali.veli+ayar@example.com.tr.")
    assert (match.type, match.text) == ("EMAIL", "ali.veli+ayar@example.com.tr")
    assert find_pii("user at example dot com, a@b") == []


def test_ip_v4_and_v6() -> None:
    found = find_pii("from 192.168.1.10 and 2001:db8::1 and fe80::1ff:fe23:4567:890a")
    assert [(m.type, m.text) for m in found] == [
        ("IP", "192.168.1.10"), ("IP", "2001:db8::1"), ("IP", "fe80::1ff:fe23:4567:890a")
    ]
    assert find_pii("version 300.1.2.3 and 1.2.3.4.5") == []


def test_redact_counts_by_type_and_placeholders() -> None:
    text = "a@b.co ve c@d.org, tel 0532 123 45 67, TCKN 10000000146, kart 4111111111111111"
    redacted, counts = redact_pii(text)
    assert redacted == "<EMAIL> ve <EMAIL>, tel <PHONE>, TCKN <TCKN>, kart <CARD>"
    assert counts == {"EMAIL": 2, "PHONE": 1, "TCKN": 1, "CARD": 1}


def test_types_filter_and_unknown_type() -> None:
    redacted, counts = redact_pii("a@b.co 10000000146", types=["TCKN"])
    assert redacted == "a@b.co <TCKN>" and counts == {"TCKN": 1}
    with pytest.raises(ValueError, match="SSN"):
        find_pii("x", types=["SSN"])
