"""Tests of server.redact: secrets go, ordinary identifiers (digests, SHAs, UUIDs) stay."""


import pytest

from server import redact_text, redact_value
from server.redact import redact_window
from tests.fake_secrets import AWS_ACCESS_KEY_ID, OPENSSH_PRIVATE_KEY_BLOCK, RSA_PRIVATE_KEY_BLOCK, SLACK_TOKEN

SECRETS = {
    "aws access key": ("aws_key = " + AWS_ACCESS_KEY_ID, AWS_ACCESS_KEY_ID),
    "private key block": (
        RSA_PRIVATE_KEY_BLOCK,
        "MIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu",
    ),
    "openssh private key": (
        OPENSSH_PRIVATE_KEY_BLOCK,
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
    ),
    "bearer token": ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9abcdefghij", "eyJhbGciOiJIUzI1NiJ9abcdefghij"),
    "github token": ("token: ghp_" + "a1B2c3D4e5" * 4, "ghp_" + "a1B2c3D4e5" * 4),
    "slack token": ("SLACK=" + SLACK_TOKEN, SLACK_TOKEN),
    "password assignment": ('password = "hunter2-is-great"', "hunter2-is-great"),
    "env password": ("DB_PASSWORD=s3cr3tValue", "s3cr3tValue"),
    "api key in json": ('{"api_key": "sk-test-51Habcdefghijklmnop"}', "sk-test-51Habcdefghijklmnop"),
    "secret in yaml": ("client_secret: Zm9vYmFyYmF6cXV4", "Zm9vYmFyYmF6cXV4"),
    "password in url": ("postgres://admin:pa55w0rd@db.internal/app", "pa55w0rd"),
}

ORDINARY = {
    "sha256 digest": "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "git sha": "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 fixed it",
    "short sha": "see 9fceb02 for details",
    "uuid": "request 123e4567-e89b-12d3-a456-426614174000 finished",
    "md5": "md5: 9e107d9d372bb6826bd81d3542a419d6",
    "type annotation": "def connect(password: str = None) -> bool:",
    "env lookup": 'secret = os.environ["APP_SECRET"]',
    "function call": "api_key = load_api_key(config)",
    "length constant": "max_password_length = 64",
    "prose": "Rotate the password every 90 days and never log a secret.",
}


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_redact_text_removes_secret(name):
    """It removes each kind of secret and leaves a redaction marker."""
    text, secret = SECRETS[name]
    redacted = redact_text(text)
    assert secret not in redacted
    assert "[REDACTED:" in redacted


@pytest.mark.parametrize("name", sorted(ORDINARY))
def test_redact_text_keeps_ordinary_identifiers(name):
    """It leaves digests, SHAs, UUIDs and ordinary code untouched."""
    assert redact_text(ORDINARY[name]) == ORDINARY[name]


def test_redact_text_keeps_assignment_name():
    """It keeps the variable name and operator so the reader still sees what was there."""
    assert redact_text('password = "hunter2-is-great"') == 'password = "[REDACTED:secret]"'


def test_redact_value_walks_nested_json():
    """It redacts strings at any depth of a JSON value and leaves other values alone."""
    value = {"hits": [{"text": "key " + AWS_ACCESS_KEY_ID, "line": 3}], "ok": True, "sha": ORDINARY["git sha"]}
    redacted = redact_value(value)
    assert AWS_ACCESS_KEY_ID not in redacted["hits"][0]["text"]
    assert redacted["hits"][0]["line"] == 3 and redacted["ok"] is True
    assert redacted["sha"] == ORDINARY["git sha"]


ADVERSARIAL = {
    # What made the old secret-assignment patterns backtrack (quadratic or worse: 8 KB took 44 s).
    "a-": "a-" * 50_000,
    "name-run": "password" + "a-" * 50_000,
    "dots": "api_key." * 12_500,
    "quote-run": 'secret = "' + "x" * 100_000,
    "non-ascii": "é-" * 50_000,
}


@pytest.mark.timeout(30)  # a hang guard: the old patterns took hours here (speed goal: bench_reply_bounds)
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_redact_text_is_linear_on_adversarial_input(name):
    """100 KB built against the patterns redacts and returns (RE2: linear time, no backtracking)."""
    assert isinstance(redact_text(ADVERSARIAL[name]), str)


@pytest.mark.parametrize("cut", range(100, 125, 2))
def test_redact_window_drops_a_secret_crossing_the_end(cut):
    """A slice whose end falls inside a key shows none of it; one whose end is past it shows the marker."""
    text = "x " * 50 + AWS_ACCESS_KEY_ID + " tail"
    shown, start, end = redact_window(text, 0, cut)
    assert "AKIA" not in shown and start == 0 and end <= cut
    if cut >= 100 + len(AWS_ACCESS_KEY_ID):
        assert "[REDACTED:aws-access-key]" in shown


def test_redact_window_drops_a_key_block_crossing_the_start():
    """A slice that starts inside a private-key block (its BEGIN line outside the slice) shows none of it."""
    text = "intro\n" + RSA_PRIVATE_KEY_BLOCK.replace("MIIE", "MIIE" * 400) + "\nafter the key"
    shown, start, _ = redact_window(text, len(text) // 2)
    assert shown == "\nafter the key" and start == len(text) - len(shown)


def test_redact_window_blind_end_drops_the_partial_word():
    """When the text itself was cut (nothing after it is known), a partial last word is dropped."""
    shown, _, end = redact_window("see key " + AWS_ACCESS_KEY_ID[:10], end_is_cut=True)
    assert shown == "see key " and end == 8


def test_redact_text_escapes_lone_surrogates():
    """Lone surrogates come back as backslash escapes, and secrets around them are still found."""
    assert redact_text("a\udcff password=hunter22xyz") == "a\\udcff password=[REDACTED:secret]"
