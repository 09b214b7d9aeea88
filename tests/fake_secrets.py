"""Fake credentials for redaction and secret-skipping tests, assembled at run time.

Written whole, they would make this repository's own test files look like leaked secrets: the
indexer would skip them and secret scanners would flag them. Nothing here is a real credential.
"""

AWS_ACCESS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
RSA_PRIVATE_KEY_BLOCK = (
    "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu\n-----END RSA " + "PRIVATE KEY-----"
)
OPENSSH_PRIVATE_KEY_BLOCK = (
    "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH " + "PRIVATE KEY-----"
)
SLACK_TOKEN = "xox" + "b-123456789012-abcdefABCDEF"
