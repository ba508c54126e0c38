"""A labelled PII corpus, generated deterministically, for benchmarks/pii.py.

Faker supplies the types it has (mail addresses, phone numbers, cards, SSNs, IBANs, IP
addresses); the rest come from generators below that compute the real check digits. Every value
sits in a natural sentence, with a context word where the type needs one and sometimes without
where it does not. The hard negatives are the look-alikes that must not match.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import random
import string
from dataclasses import dataclass
from datetime import date, timedelta

import phonenumbers
from faker import Faker

from policy_extproc.detect.pii_wallets import keccak256


@dataclass(frozen=True, slots=True)
class Span:
    """A labelled value: its type and str indices in the sample text."""

    entity: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Sample:
    """One sentence and the PII spans it holds (none for a negative)."""

    text: str
    spans: tuple[Span, ...]
    kind: str  # the type it was made for, or "negative:<what>"


# --- value generators ---------------------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits
_AREA_CODES = ("212", "213", "305", "312", "415", "503", "512", "617", "646", "702", "713", "206")
_DL_STATES = {  # state formats (AAMVA) the generator draws from
    "CA": "A#######",
    "TX": "########",
    "NY": "### ### ###",
    "FL": "A###-###-##-###-#",
    "IL": "A###-####-####",
    "PA": "## ### ###",
    "WI": "A###-####-####-##",
    "MD": "A-###-###-###-###",
    "WA": "A##########",
    "NJ": "A##############",
    "OH": "AB######",
    "NH": "##ABC#####",
}


def _fill(rng: random.Random, shape: str) -> str:
    out = []
    for ch in shape:
        if ch == "#":
            out.append(rng.choice(string.digits))
        elif ch.isalpha():
            out.append(rng.choice(string.ascii_uppercase))
        else:
            out.append(ch)
    return "".join(out)


def _group(digits: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, i = [], 0
    for n in sizes:
        parts.append(digits[i : i + n])
        i += n
    return sep.join(parts)


def _b58check(payload: bytes) -> str:
    raw = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    num = int.from_bytes(raw, "big")
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    out = ""
    while num:
        num, r = divmod(num, 58)
        out = alphabet[r] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def _bech32(version: int, program: bytes) -> str:
    charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    data, acc, bits = [version], 0, 0
    for b in program:
        acc = (acc << 8) | b
        bits += 8
        while bits >= 5:
            bits -= 5
            data.append((acc >> bits) & 31)
    if bits:
        data.append((acc << (5 - bits)) & 31)
    values = [3, 3, 0, 2, 3, *data, 0, 0, 0, 0, 0, 0]  # hrp "bc" expanded
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    chk ^= 1 if version == 0 else 0x2BC830A3
    data += [(chk >> 5 * (5 - i)) & 31 for i in range(6)]
    return "bc1" + "".join(charset[d] for d in data)


def _eip55(addr: bytes) -> str:
    hexed = addr.hex()
    digest = keccak256(hexed.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(h, 16) >= 8 else c for c, h in zip(hexed, digest[:40], strict=True)
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Values:
    """Random PII values of each type, from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fake = Faker(["en_US"])
        self.fake.seed_instance(seed)
        self.intl = {loc: Faker(loc) for loc in ("en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES")}
        for i, f in enumerate(self.intl.values()):
            f.seed_instance(seed + i + 1)

    def token(self, n: int, alphabet: str = _ALNUM) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def EMAIL(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.fake.email()
        if r < 0.7:
            return self.fake.company_email()
        if r < 0.85:
            user = self.fake.user_name()
            return f"{user}+{self.fake.word()}@{self.fake.domain_word()}.co.uk"
        # Addresses as people outside ASCII write them (RFC 6531), and punycode domains.
        return self.rng.choice(
            ("jörg.müller@example.org", "bob@bücher.example", "иван.петров@пример.рф",
             "山田@例え.テスト", "maría@correo.es", "a@xn--d1acufc.xn--p1ai",
             "user@xn--80ak6aa92e.com", "zoë+news@straße.example.de")
        )  # fmt: skip

    def PHONE(self) -> str:
        r = self.rng.random()
        if r < 0.2:  # Faker's own US formats (extensions, "001-"), where the number is real
            raw = self.fake.phone_number()
            plain = raw.split("x")[0].removeprefix("001-")
            if phonenumbers.is_valid_number(phonenumbers.parse(plain, "US")):
                return raw
        if r < 0.35:  # national formats of other plans, as their Faker locale writes them
            loc = self.rng.choice(("en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES"))
            raw = self.intl[loc].phone_number()
            if not raw.startswith("+") and "(0)" not in raw:
                num = phonenumbers.parse(raw, loc[-2:])
                if phonenumbers.is_valid_number(num):
                    return raw
        if r < 0.42:  # an exit prefix instead of "+"
            num = phonenumbers.parse(
                self.rng.choice(
                    ("+44 20 7946 0958", "+49 30 901820", "+33 1 42 68 53 00", "+1 202 555 0143")
                )
            )
            intl = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
            return self.rng.choice(("00", "011 ", "00")) + intl[1:]
        if r < 0.55:
            area, ex, line = (
                self.rng.choice(_AREA_CODES),
                self.rng.randint(201, 989),
                self.token(4, string.digits),
            )
            if ex % 100 == 11 or ex == 555:
                ex = 234
            return self.rng.choice(
                (f"({area}) {ex}-{line}", f"{area}-{ex}-{line}", f"{area}.{ex}.{line}",
                 f"+1 {area} {ex} {line}",
                f"+1 ({area}) {ex}-{line}", f"1-{area}-{ex}-{line}", f"+1-{area}-{ex}-{line}")
            )  # fmt: skip
        while True:
            loc = self.rng.choice(list(self.intl))
            raw = self.intl[loc].phone_number()
            try:
                num = phonenumbers.parse(raw, loc[-2:])
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(num):
                return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)

    def _luhn_card(self, prefix: str, length: int) -> str:
        body = prefix + self.token(length - len(prefix) - 1, string.digits)
        for d in string.digits:
            if _luhn(body + d):
                return body + d
        raise AssertionError("unreachable")

    def CREDIT_CARD(self) -> str:
        if self.rng.random() < 0.2:  # the issuers Faker lacks: Maestro 12-19, JCB 15, Dankort
            # (UATP is found only next to a card word: see is_card_shaped; not drawn here.)
            prefix, length = self.rng.choice(
                (("5018", 12), ("6759", 13), ("6304", 19), ("1800", 15), ("2131", 15),
                 ("5019", 16))
            )  # fmt: skip
            digits = self._luhn_card(prefix, length)
            sizes = {12: (4, 4, 4), 13: (4, 4, 5), 15: (4, 6, 5), 16: (4, 4, 4, 4)}.get(
                length, (4, 4, 4, 4, 3)
            )
            return (
                _group(digits, sizes, self.rng.choice((" ", "-", ""))) if length != 19 else digits
            )
        kind = self.rng.choice(("visa16", "mastercard", "amex", "discover", "jcb", "diners"))
        digits = self.fake.credit_card_number(kind)
        while (
            kind == "jcb" and not 3528 <= int(digits[:4]) <= 3589
        ):  # Faker strays below JCB's range
            digits = self.fake.credit_card_number(kind)
        sep = self.rng.choice((" ", "-", ""))
        if not sep:
            return digits
        sizes = {15: (4, 6, 5), 14: (4, 6, 4)}.get(
            len(digits), (4, 4, 4, 4, 3)[: (len(digits) + 3) // 4]
        )
        if len(digits) == 16:
            sizes = (4, 4, 4, 4)
        return _group(digits, sizes, sep)

    def US_SSN(self) -> str:
        ssn = self.fake.ssn()
        return self.rng.choice((ssn, ssn, ssn.replace("-", " "), ssn.replace("-", ".")))

    def US_SSN_bare(self) -> str:
        return self.fake.ssn().replace("-", "")

    def IBAN(self) -> str:
        iban = self.rng.choice(list(self.intl.values())).iban()
        sep = self.rng.choice((" ", " ", "-", "", ""))
        return sep.join(iban[i : i + 4] for i in range(0, len(iban), 4)) if sep else iban

    def IP_ADDRESS(self) -> str:
        if self.rng.random() < 0.6:
            return self.fake.ipv4()
        addr = ipaddress.IPv6Address(self.fake.ipv6())
        if self.rng.random() < 0.5:  # give it a run of zeros so it compresses
            addr = ipaddress.IPv6Address(int(addr) & ~(0xFFFFFFFF << 32))
        return addr.compressed if self.rng.random() < 0.7 else addr.exploded

    def US_PASSPORT(self) -> str:
        if self.rng.random() < 0.5:
            return self.rng.choice(string.ascii_uppercase) + self.token(8, string.digits)
        return str(self.rng.randint(1, 9)) + self.token(8, string.digits)

    def US_DRIVER_LICENSE(self) -> str:
        return _fill(self.rng, self.rng.choice(list(_DL_STATES.values())))

    def DATE_OF_BIRTH(self) -> str:
        d = date(1935, 1, 1) + timedelta(days=self.rng.randint(0, 365 * 70))
        return self.rng.choice(
            (d.isoformat(), d.strftime("%m/%d/%Y"), d.strftime("%d.%m.%Y"),
             d.strftime("%B %-d, %Y"), d.strftime("%-d %B %Y"), d.strftime("%b %-d, %Y"),
             d.strftime("%-m/%-d/%Y"), d.strftime("%d-%b-%Y"),
             d.strftime("%Y-%m-%dT00:00:00Z"), d.strftime("%B %Y"), d.strftime("%m/%Y"))
        )  # fmt: skip

    def US_BANK_ROUTING(self) -> str:
        while True:
            prefix = self.rng.choice([*range(1, 13), *range(21, 33), *range(61, 73), 80])
            body = f"{prefix:02d}" + self.token(6, string.digits)
            n = [int(c) for c in body]
            total = 3 * (n[0] + n[3] + n[6]) + 7 * (n[1] + n[4] + n[7]) + n[2] + n[5]
            aba = body + str((10 - total % 10) % 10)
            return aba if self.rng.random() < 0.8 else f"{aba[:4]}-{aba[4:8]}-{aba[8]}"

    def US_ITIN(self) -> str:
        group = self.rng.choice([*range(50, 66), *range(70, 89), *range(90, 93), *range(94, 100)])
        itin = f"9{self.token(2, string.digits)}-{group}-{self.token(4, string.digits)}"
        return itin if self.rng.random() < 0.8 else itin.replace("-", " ")

    def UK_NHS(self) -> str:
        while True:
            first = str(self.rng.choice((4, 6, 7))) + self.token(8, string.digits)
            check = 11 - sum(int(c) * w for c, w in zip(first, range(10, 1, -1), strict=True)) % 11
            if check != 10:
                d = first + str(0 if check == 11 else check)
                return self.rng.choice(
                    (f"{d[:3]} {d[3:6]} {d[6:]}", f"{d[:3]} {d[3:6]} {d[6:]}", d)
                )

    def CRYPTO_WALLET(self) -> str:
        r = self.rng.random()
        body = self.rng.randbytes(20)
        if r < 0.3:
            return _b58check(bytes([self.rng.choice((0, 5))]) + body)
        if r < 0.55:
            return (
                _bech32(0, body) if self.rng.random() < 0.5 else _bech32(1, self.rng.randbytes(32))
            )
        return _eip55(body) if r < 0.85 else "0x" + body.hex()

    def API_SECRET(self) -> str:
        t = self.token
        kind = self.rng.randrange(10)
        if kind == 0:
            return "sk-" + t(20) + "T3BlbkFJ" + t(20)
        if kind == 1:
            return "sk-proj-" + t(74, _ALNUM + "-_") + "T3BlbkFJ" + t(74, _ALNUM + "-_")
        if kind == 2:
            return "sk-ant-api03-" + t(93, _ALNUM + "-_") + "AA"
        if kind == 3:
            return self.rng.choice(("AKIA", "ASIA")) + t(16, string.ascii_uppercase + "234567")
        if kind == 4:
            return self.rng.choice(("ghp_", "gho_", "ghs_")) + t(36)
        if kind == 5:
            return "github_pat_11" + t(20, string.ascii_uppercase + string.digits) + "_" + t(59)
        if kind == 6:
            return f"xoxb-{t(12, string.digits)}-{t(13, string.digits)}-{t(24)}"
        if kind == 7:
            return self.rng.choice(("sk_live_", "rk_live_")) + t(24)
        if kind == 8:
            header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
            claims = {
                "sub": str(self.rng.randint(1, 10**9)),
                "name": self.fake.name(),
                "iat": 1516239022,
            }
            payload = _b64url(json.dumps(claims).encode())
            return f"{header}.{payload}.{_b64url(self.rng.randbytes(32))}"
        body = base64.b64encode(self.rng.randbytes(self.rng.choice((120, 250, 600)))).decode()
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        kind_name = self.rng.choice(("RSA ", "EC ", "OPENSSH ", ""))
        return (
            f"-----BEGIN {kind_name}PRIVATE KEY-----\n{lines}\n-----END {kind_name}PRIVATE KEY-----"
        )


# --- sentences ----------------------------------------------------------------------------------

# "{v}" is the value. Lists under "plain" carry no context word for the type. Prompts often
# carry JSON or key=value data, so some context words are snake_case keys.
_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "EMAIL": {
        "context": (
            '{"email": "{v}", "plan": "pro"}',
            "Please email me at {v} when it is ready.",
            "Contact: {v}",
        ),
        "plain": (
            "Forward the report to {v} before Friday.",
            "I think {v} handles that account.",
            "cc {v}, thanks!",
            "From: Jane Roe <{v}>",
        ),
    },
    "PHONE": {
        "context": (
            '{"phone_number": "{v}"}',
            "You can call me on {v} after six.",
            "Phone: {v}",
            "My mobile is {v}.",
        ),
        "plain": (
            "Reach the front desk at {v} if the door is locked.",
            "Dial {v} for support.",
            "Leave a message at {v} and I'll get back to you.",
        ),
    },
    "CREDIT_CARD": {
        "context": (
            "card_number={v}&exp=0927",
            "Charge it to my card {v}, expiry 09/27.",
            "Visa: {v}",
            "I paid with credit card number {v} yesterday.",
        ),
        "plain": ("The number on the back was {v}, is that right?", "Use {v} for the booking."),
    },
    "US_SSN": {
        "context": (
            '{"ssn": "{v}"}',
            "My SSN is {v}.",
            "Social security number: {v}",
            "Please verify the SSN {v} on file.",
        ),
        "plain": ("Fill in {v} on line 3 of the form.", "The applicant listed {v} there."),
    },
    "US_SSN_bare": {
        "context": (
            '{"social_security_number": "{v}"}',
            "SSN {v} is on the W-2.",
            "my social security number is {v} please update it",
        ),
        "plain": (),
    },
    "IBAN": {
        "context": (
            "name,iban\nJ. Smith,{v}",
            "Wire the deposit to IBAN {v} please.",
            "Bank account: {v}",
        ),
        "plain": ("Pay the invoice into {v} by Monday.", "Send it to {v} (Berlin branch)."),
    },
    "IP_ADDRESS": {
        "context": (
            '{"client_ip": "{v}"}',
            "The server IP is {v}.",
            "Failed login from host {v} at night.",
        ),
        "plain": (
            "Requests from {v} keep timing out.",
            "ssh admin@{v} -p 2222 did not work.",
            "GET http://{v}/health returned 503",
        ),
    },
    "US_PASSPORT": {
        "context": (
            '{"passport_number": "{v}"}',
            "My passport number is {v}.",
            "Passport: {v}, expires 2031.",
            "I renewed my passport {v} last spring.",
        ),
        "plain": (),
    },
    "US_DRIVER_LICENSE": {
        "context": (
            "drivers_license: {v}",
            "Driver's license number {v} was scanned.",
            "DL: {v}",
            "Her driving licence is {v}, issued in 2019.",
        ),
        "plain": (),
    },
    "DATE_OF_BIRTH": {
        "context": (
            '{"date_of_birth": "{v}"}',
            "DOB: {v}",
            "I was born on {v} in Ohio.",
            "Date of birth {v}, please confirm.",
            "His birthday is {v}.",
        ),
        "plain": (),
    },
    "US_BANK_ROUTING": {
        "context": (
            '{"routing_number": "{v}", "account": "000123"}',
            "Routing number {v}, account 0012345678.",
            "ABA {v}",
            "Use routing # {v} for the direct deposit.",
        ),
        "plain": (),
    },
    "US_ITIN": {
        "context": ("itin={v}", "My ITIN is {v}.", "Taxpayer ID {v} goes on the 1040."),
        "plain": ("Enter {v} in box 2.", "The form shows {v} for the filer."),
    },
    "UK_NHS": {
        "context": (
            '{"nhs_number": "{v}"}',
            "My NHS number is {v}.",
            "NHS no. {v} - please update the record.",
            "Patient NHS {v} was referred.",
        ),
        "plain": (),
    },
    "CRYPTO_WALLET": {
        "context": ('{"wallet": "{v}"}', "Send the BTC to {v} please.", "My wallet address: {v}"),
        "plain": ("Refund goes to {v} once confirmed.", "Paid out to {v} yesterday."),
    },
    "API_SECRET": {
        "context": ('{"api_key": "{v}"}', "Here is my API key: {v}", "export TOKEN={v}"),
        "plain": ("It fails with {v} in the header.", "config:\n  value: {v}\n", "{v}"),
    },
}

_NEGATIVES: dict[str, tuple[str, ...]] = {
    "order number": ("Your order #{n9} has shipped.", "Order {n10} was cancelled.",
                     "Order ORD-2024-{n6} is on its way.", "order no. {n12} arrives Tuesday"),
    "invoice id": ("Invoice INV-2024-{n5} is overdue.", "See invoice {n10} for details.",
                   "invoice number {n9} paid in full"),
    "version": ("Upgrade to version {ver4} before the deadline.", "Running v{ver3} in prod.",
                "Firmware {ver4} fixed the bug.", "release {ver3} notes"),
    "uuid": ("Request id {uuid} failed.", "trace={uuid}"),
    "git sha": ("Fixed in commit {sha40}.", "git checkout {sha7}", "merged {sha12} into main"),
    "hex hash": ("sha256: {sha64}", "md5 {md5}", "digest {sha40}"),
    "timestamp": ("Logged at {iso} by the job.", "ts={epoch}", "event at {epochms}",
                  "at {clock} the batch started", "created {isodate} 10:15"),
    "luhn-failing card": ("Reference 16 digits {badcard} on the slip.",
                          "number {badcard} rejected"),
    "9 digits no context": ("The count reached {n9} rows.", "ID {n9} not found.",
                            "Please quote {n9} in your reply."),
    "price": ("Total: ${price}", "It costs €{price} incl. VAT.", "Budget USD {bigprice}."),
    "upgrade": ("Upgrading from {ver4} to {ver4b} fixed the leak.", "downgraded {ver4} to {ver4b}"),
    "catalogue": ("Catalog no. {n3} {n3b} {n4} is out of print.", "cat. {n10} in stock"),
    "software licence": ("The software license no. {n8} covers ten seats.",
                         "licence key {n8}-{n4} for the IDE"),
    "code": ("x = np.zeros(({n4}, {n3})); y = x.reshape(-1, {n3b})",
             "if (retries > {n3}) {{ sleep({n4}); }}", "const MAX = {n10}; // bytes",
             "assert hash(x) == {n12}"),
    "log line": ("2024-05-01 12:00:01,123 INFO [worker-{n3}] job {sha12} done in 0.52s",
                 "E0501 12:00:01.{n6} {n5} server.go:{n3}] dial tcp: i/o timeout",
                 "[{iso}] pid={n5} rss={n8}KB took {n4}ms"),
    "sql": ("SELECT * FROM orders WHERE id IN ({n10}, {n10b}) LIMIT 20;",
            "UPDATE accounts SET balance = {price} WHERE id = {n9};"),
    "base64": ("data:image/png;base64,{b64}", "payload={b64}"),
    "tracking number": ("Tracking: 1Z{n3}AA{n10}{n3b} via UPS", "FedEx {n12}{n3}",
                        "USPS 9400{n10}{n12}"),
}  # fmt: skip


class _Negatives:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def fields(self) -> dict[str, str]:
        r, d = self.rng, string.digits
        num = lambda n: str(r.randint(1, 9)) + "".join(r.choice(d) for _ in range(n - 1))  # noqa: E731
        hexs = lambda n: "".join(r.choice("0123456789abcdef") for _ in range(n))  # noqa: E731
        card = num(16)
        while _luhn(card):
            card = card[:-1] + r.choice(d)
        return {
            "n5": num(5), "n6": num(6), "n9": num(9), "n10": num(10), "n12": num(12),
            "n3": num(3), "n3b": num(3), "n4": num(4), "n8": num(8), "n10b": num(10),
            "ver4b": ".".join(str(r.randint(0, 255)) for _ in range(4)),
            "b64": base64.b64encode(r.randbytes(r.choice((24, 48, 96)))).decode(),
            "ver3": ".".join(str(r.randint(0, 20)) for _ in range(3)),
            "ver4": ".".join(str(r.randint(0, 255)) for _ in range(4)),
            "uuid": "-".join(hexs(n) for n in (8, 4, 4, 4, 12)),
            "sha40": hexs(40), "sha7": hexs(7), "sha12": hexs(12), "sha64": hexs(64),
            "md5": hexs(32),
            "iso": f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:15Z",
            "isodate": f"2023-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
            "epoch": str(r.randint(1_600_000_000, 1_800_000_000)),
            "epochms": str(r.randint(1_600_000_000_000, 1_800_000_000_000)),
            "clock": f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}",
            "badcard": " ".join(card[i : i + 4] for i in range(0, 16, 4)) if r.random() < 0.5
                       else card,
            "price": f"{r.randint(1, 9999):,}.{r.randint(0, 99):02d}",
            "bigprice": f"{r.randint(10_000, 99_999_999):,}",
        }  # fmt: skip


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


_FILLER = (
    "Thanks for the quick reply yesterday.",
    "Could you summarise the attached notes in three bullet points?",
    "Let me know if anything else is needed from my side.",
    "The meeting moved to the small room on the second floor.",
    "Please rewrite this paragraph so that it sounds friendlier.",
    "Translate the following into French: la réunion est à 15 h, merci — 日本語も可。",
    "We shipped 3 releases this quarter and closed 41 tickets.",
)


def _place(template: str, value: str, entity: str, kind: str) -> Sample:
    start = template.index("{v}")
    text = template.replace("{v}", value)
    return Sample(text, (Span(entity, start, start + len(value)),), kind)


def build(seed: int = 20240607, per_type: int = 120) -> tuple[list[Sample], list[Sample]]:
    """(positives, negatives): per_type sentences for each type, and the hard negatives."""
    values = _Values(seed)
    rng = values.rng
    positives: list[Sample] = []
    for kind, templates in _TEMPLATES.items():
        entity = kind.removesuffix("_bare")
        count = per_type // 3 if kind.endswith("_bare") else per_type
        for i in range(count):
            pool = templates["plain"] if templates["plain"] and i % 2 else templates["context"]
            value = getattr(values, kind)()
            sample = _place(rng.choice(pool), value, entity, kind)
            if i % 5 == 0:  # some with non-ASCII text before the value, to check offsets
                lead = rng.choice(("Grüße aus Köln! ", "Привет. ", "🙂 ", "Réf. client : "))
                sample = Sample(
                    lead + sample.text,
                    tuple(
                        Span(s.entity, s.start + len(lead), s.end + len(lead)) for s in sample.spans
                    ),
                    kind,
                )
            positives.append(sample)
    negatives: list[Sample] = []
    negs = _Negatives(rng)
    for what, templates in _NEGATIVES.items():
        for _ in range(per_type // 2):
            negatives.append(
                Sample(rng.choice(templates).format(**negs.fields()), (), f"negative:{what}")
            )
    return positives, negatives


def documents(
    samples: list[Sample], size: int, count: int, *, rate: float = 0.35, seed: int = 1
) -> list[str]:
    """count texts of about size characters: samples at the given rate, plain prose otherwise."""
    rng = random.Random(seed)
    docs = []
    for _ in range(count):
        parts: list[str] = []
        length = 0
        while length < size:
            part = rng.choice(samples).text if rng.random() < rate else rng.choice(_FILLER)
            parts.append(part)
            length += len(part) + 1
        docs.append(" ".join(parts)[:size])
    return docs
