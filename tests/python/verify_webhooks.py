"""Verifies tokenvend's webhook deliveries with the Standard Webhooks reference library.

Reads {"secret": "whsec_...", "deliveries": [{"headers": {...}, "body": "..."}]} on
stdin; prints {"verified": [payload...], "tampered_rejected": n, "wrong_secret_rejected": n}.
"""

import base64
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> None:
    given = json.load(sys.stdin)
    webhook = Webhook(given["secret"])
    other = Webhook("whsec_" + base64.b64encode(b"\x01" * 32).decode())
    verified, tampered_rejected, wrong_secret_rejected = [], 0, 0
    for delivery in given["deliveries"]:
        headers, body = delivery["headers"], delivery["body"]
        verified.append(webhook.verify(body, headers))
        try:
            webhook.verify(body.replace("}", " }", 1), headers)
        except WebhookVerificationError:
            tampered_rejected += 1
        try:
            other.verify(body, headers)
        except WebhookVerificationError:
            wrong_secret_rejected += 1
    json.dump(
        {
            "verified": verified,
            "tampered_rejected": tampered_rejected,
            "wrong_secret_rejected": wrong_secret_rejected,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
