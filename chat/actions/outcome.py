"""What one call of an action came to: `calling.call` returns it, `services` records it on the
conversation's ActionCall, and the answer run shows its text or its sentence for the customer.

Statuses (those of ActionCall.Status a call can end in):
- `ok`: the back end answered 2xx with JSON holding every field the result shows;
- `error`: it answered otherwise (reason `http_<status>`), redirected (`redirect`: never
  followed), or could not be reached (`unreachable`);
- `timeout`: no whole answer within the action's timeout;
- `bad_response`: not JSON (`not_json`), larger than ACTIONS_MAX_RESPONSE_BYTES (`too_large`),
  or without a field the result shows (`missing_field`);
- `refused`: the desk did not call: `invalid_arguments`, `not_verified`, `missing_secret`,
  `bad_url`, `host_not_allowed`, `disabled`, `misconfigured`, `limit_answer`,
  `limit_conversation`.
"""

from dataclasses import dataclass, field

from chat.actions import texts

OK, ERROR, TIMEOUT, BAD_RESPONSE, REFUSED = "ok", "error", "timeout", "bad_response", "refused"
STATUSES = (OK, ERROR, TIMEOUT, BAD_RESPONSE, REFUSED)


@dataclass(frozen=True)
class Outcome:
    status: str
    reason: str = ""
    # For staff and the model: what was wrong, e.g. the arguments the schema refused. Never a
    # header, a secret or the URL (which holds the arguments and the customer's id).
    detail: str = ""
    http_status: int | None = None
    latency_ms: int | None = None
    fields: dict = field(default_factory=dict)
    text: str = ""  # the rendered result, shown to the customer

    @property
    def ok(self) -> bool:
        return self.status == OK

    def customer_text(self, language: str) -> str:
        """The result for the customer, or one honest sentence when there is none."""
        if self.ok:
            return self.text
        return texts.failure(status=self.status, reason=self.reason, language=language)


def refused(reason: str, detail: str) -> Outcome:
    return Outcome(status=REFUSED, reason=reason, detail=detail)
