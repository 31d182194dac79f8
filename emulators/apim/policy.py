"""Read an Azure API Management policy document (``cloud/apim/policy.xml``) into typed steps.

The local gateway enforces the same XML that the cloud overlay deploys, so the parser is strict about
what it claims to enforce and loud about what it does not:

* **Implemented** (applied in document order): ``rate-limit-by-key`` and ``quota-by-key`` (inbound only,
  counter key ``@(context.Subscription.Id)`` or a literal string), ``set-header`` (inbound and outbound) and
  ``set-query-parameter`` (inbound) with literal ``<value>`` elements and ``exists-action`` override, skip,
  append or delete; ``validate-content`` (inbound) as a request body size limit and content-type check:
  ``max-size`` bytes at most (413; the decompressed size of a gzip/deflate body, like APIM), the
  ``<content type=…>`` children as the allowed media types when ``unspecified-content-type-action="prevent"``
  (400 otherwise), ``action="ignore"`` on each ``<content>`` (the gateway validates no schemas).
  ``<base />`` is a no-op: there is no product or global scope locally.
* **Refused** (:class:`PolicyError`, the gateway does not start): a policy element that can *reject* or
  *authenticate* a caller and that the gateway does not implement (``ip-filter``, ``validate-jwt``,
  ``check-header``, ``rate-limit``, ``quota``, ``return-response``, ...), also when nested in ``choose``; an
  implemented limit with an attribute that changes what is counted (``increment-condition``,
  ``increment-count``, ``bandwidth``) or an expression the gateway cannot evaluate; values APIM itself rejects
  (``renewal-period`` of a rate limit above 300 s, of a quota below 300 s); and malformed documents. Running
  such a policy locally would let through requests the cloud rejects, so tests would pass for the wrong reason.
* **Reported** (kept in :attr:`Policy.unsupported`, logged as a warning at startup): every other element the
  gateway does not implement (``set-variable``, ``cors``, ``rewrite-uri``, ``authentication-managed-identity``,
  ``set-header`` with a policy expression, anything in ``backend``/``on-error`` besides ``<base />``, ...). They
  only transform requests or responses; the gateway skips them and says so.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger("emulators.apim")

Section = Literal["inbound", "backend", "outbound", "on-error"]
SECTIONS: tuple[Section, ...] = ("inbound", "backend", "outbound", "on-error")
ExistsAction = Literal["override", "skip", "append", "delete"]
EXISTS_ACTIONS: tuple[ExistsAction, ...] = ("override", "skip", "append", "delete")

SUBSCRIPTION_ID = "@(context.Subscription.Id)"
RATE_LIMIT_MAX_PERIOD_S = 300  # APIM: rate-limit-by-key renewal-period "maximum allowed value: 300 seconds"
QUOTA_MIN_PERIOD_S = 300  # APIM: quota-by-key renewal-period "minimum period: 300 seconds" (0 = lifetime)
VALIDATE_CONTENT_MAX_SIZE = 4 * 1024 * 1024  # APIM: validate-content max-size "maximum value: 4 MB"
ValidationAction = Literal["ignore", "prevent", "detect"]
VALIDATION_ACTIONS: tuple[ValidationAction, ...] = ("ignore", "prevent", "detect")

# Policies that can reject, throttle or authenticate a caller: not enforcing one of them locally would let
# requests through that the cloud gateway turns away, so a policy that uses one is refused at startup.
ACCESS_RESTRICTING = frozenset(
    {
        "azure-openai-token-limit",
        "check-header",
        "ip-filter",
        "limit-concurrency",
        "llm-content-safety",
        "llm-token-limit",
        "mock-response",
        "quota",
        "rate-limit",
        "return-response",
        "validate-azure-ad-token",
        "validate-client-certificate",
        "validate-content",
        "validate-graphql-request",
        "validate-headers",
        "validate-jwt",
        "validate-odata-request",
        "validate-parameters",
        "validate-status-code",
    }
)

_EXPRESSION = re.compile(r"^\s*@[({]")


class PolicyError(ValueError):
    """The policy is malformed, or uses a policy the local gateway must not silently skip."""


@dataclass(frozen=True)
class RateLimitByKey:
    """``<rate-limit-by-key>``: at most ``calls`` calls in any ``renewal_period`` seconds per counter key (429)."""

    calls: int
    renewal_period: int
    counter_key: str = SUBSCRIPTION_ID
    retry_after_header_name: str = "Retry-After"
    remaining_calls_header_name: str | None = None
    total_calls_header_name: str | None = None


@dataclass(frozen=True)
class QuotaByKey:
    """``<quota-by-key>``: at most ``calls`` calls per fixed ``renewal_period``-second window per key (403)."""

    calls: int
    renewal_period: int
    counter_key: str = SUBSCRIPTION_ID


@dataclass(frozen=True)
class SetHeader:
    """``<set-header>``: set, keep, add to or remove a request header (inbound) or response header (outbound)."""

    name: str
    values: tuple[str, ...] = ()
    exists_action: ExistsAction = "override"


@dataclass(frozen=True)
class SetQueryParameter:
    """``<set-query-parameter>``: the same for a query parameter of the forwarded request (inbound)."""

    name: str
    values: tuple[str, ...] = ()
    exists_action: ExistsAction = "override"


@dataclass(frozen=True)
class ValidateContent:
    """``<validate-content>`` on the request: body size (413 past ``max_size`` bytes) and content type (400).

    ``size_exceeded_action`` / ``unspecified_content_type_action``: ``prevent`` rejects, ``detect`` only logs,
    ``ignore`` does nothing (APIM's meanings). ``content_types`` are the ``<content type=…>`` media types.
    ``errors_variable_name`` is kept for the record: APIM logs the errors there; nothing reads it locally.
    """

    max_size: int
    size_exceeded_action: ValidationAction = "prevent"
    unspecified_content_type_action: ValidationAction = "prevent"
    content_types: tuple[str, ...] = ()
    errors_variable_name: str | None = None


@dataclass(frozen=True)
class Unsupported:
    """A policy element the gateway does not implement and skips (reported at startup)."""

    section: Section
    element: str
    reason: str

    def describe(self) -> str:
        return f"<{self.element}> in <{self.section}>: {self.reason}"


Step = RateLimitByKey | QuotaByKey | SetHeader | SetQueryParameter | ValidateContent


@dataclass(frozen=True)
class Policy:
    """The enforceable steps of a policy document, per section, in document order."""

    inbound: tuple[Step, ...] = ()
    outbound: tuple[SetHeader, ...] = ()
    unsupported: tuple[Unsupported, ...] = ()
    source: Path | None = field(default=None, compare=False)

    @property
    def rate_limits(self) -> tuple[RateLimitByKey, ...]:
        return tuple(s for s in self.inbound if isinstance(s, RateLimitByKey))

    @property
    def quotas(self) -> tuple[QuotaByKey, ...]:
        return tuple(s for s in self.inbound if isinstance(s, QuotaByKey))

    @property
    def content_validations(self) -> tuple[ValidateContent, ...]:
        return tuple(s for s in self.inbound if isinstance(s, ValidateContent))

    @property
    def inbound_headers(self) -> tuple[SetHeader, ...]:
        return tuple(s for s in self.inbound if isinstance(s, SetHeader))

    @property
    def inbound_query(self) -> tuple[SetQueryParameter, ...]:
        return tuple(s for s in self.inbound if isinstance(s, SetQueryParameter))

    @property
    def outbound_headers(self) -> tuple[SetHeader, ...]:
        return self.outbound

    def describe(self) -> list[str]:
        """One line per enforced step and per skipped element, for the startup log."""
        lines = [f"policy {self.source or '(in memory)'}"]
        for step in self.inbound:
            lines.append(f"  inbound:  {_describe_step(step)}")
        for header in self.outbound:
            lines.append(f"  outbound: {_describe_step(header)}")
        lines.extend(f"  skipped:  {u.describe()}" for u in self.unsupported)
        return lines


def _describe_step(step: Step) -> str:
    match step:
        case RateLimitByKey():
            return f"rate-limit-by-key {step.calls} calls / {step.renewal_period} s (sliding) per {step.counter_key}"
        case QuotaByKey():
            return f"quota-by-key {step.calls} calls / {step.renewal_period} s (fixed window) per {step.counter_key}"
        case ValidateContent():
            types = ", ".join(step.content_types) or "none"
            return (
                f"validate-content body <= {step.max_size} bytes ({step.size_exceeded_action}), content types "
                f"{types} (others: {step.unspecified_content_type_action})"
            )
        case SetHeader() | SetQueryParameter():
            kind = "set-header" if isinstance(step, SetHeader) else "set-query-parameter"
            shown = "" if step.exists_action == "delete" else " = " + ", ".join(repr(v) for v in step.values)
            return f"{kind} {step.name} ({step.exists_action}){shown}"


# --- parsing ----------------------------------------------------------------------------------------


def load_policy(path: Path | str) -> Policy:
    """Parse the policy file at ``path`` (see the module docstring for what is enforced or refused)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise PolicyError(f"cannot read APIM policy file {p}: {err}") from err
    return parse_policy(text, source=p)


def parse_policy(text: str, *, source: Path | None = None) -> Policy:
    """Parse a policy document given as text."""
    where = str(source) if source else "policy"
    try:
        root = ET.fromstring(text)  # noqa: S314 - the project's own policy file, not untrusted input
    except ET.ParseError as err:
        raise PolicyError(f"{where}: not well-formed XML: {err}") from err
    if root.tag != "policies":
        raise PolicyError(f"{where}: the root element must be <policies>, not <{root.tag}>")
    parser = _Parser(where)
    seen: set[str] = set()
    for section_el in root:
        name = section_el.tag
        if name not in SECTIONS:
            raise PolicyError(f"{where}: unknown section <{name}> (expected {', '.join(SECTIONS)})")
        if name in seen:
            raise PolicyError(f"{where}: section <{name}> appears twice")
        seen.add(name)
        parser.section(_section(name), section_el)
    policy = Policy(
        inbound=tuple(parser.inbound),
        outbound=tuple(parser.outbound),
        unsupported=tuple(parser.unsupported),
        source=source,
    )
    for item in policy.unsupported:
        log.warning("%s: %s", where, item.describe())
    return policy


def _section(name: str) -> Section:
    for s in SECTIONS:
        if s == name:
            return s
    raise AssertionError(name)  # pragma: no cover - checked by the caller


class _Parser:
    def __init__(self, where: str) -> None:
        self.where = where
        self.inbound: list[Step] = []
        self.outbound: list[SetHeader] = []
        self.unsupported: list[Unsupported] = []

    def fail(self, section: Section, el: ET.Element, message: str) -> PolicyError:
        return PolicyError(f"{self.where}: <{el.tag}> in <{section}>: {message}")

    def skip(self, section: Section, el: ET.Element, reason: str) -> None:
        self.unsupported.append(Unsupported(section, el.tag, reason))

    def section(self, section: Section, section_el: ET.Element) -> None:
        for el in section_el:
            self.element(section, el)

    def element(self, section: Section, el: ET.Element) -> None:
        tag = el.tag
        if tag == "base":
            return
        if tag == "validate-content":
            if section != "inbound":
                raise self.fail(section, el, "implemented only in <inbound> (the local gateway validates no responses)")
            self.inbound.append(self.validate_content(section, el))
            return
        if tag in ACCESS_RESTRICTING:
            raise self.fail(
                section,
                el,
                "this policy can reject or throttle callers and the local gateway does not implement it; "
                "refusing to start rather than let through requests the cloud gateway would reject "
                "(implement it in emulators/apim or remove it from the policy)",
            )
        if tag in ("rate-limit-by-key", "quota-by-key"):
            if section != "inbound":
                raise self.fail(section, el, "allowed only in <inbound>")
            self.inbound.append(self.rate_limit(section, el) if tag == "rate-limit-by-key" else self.quota(section, el))
            return
        if tag == "set-header" and section in ("inbound", "outbound"):
            header = self.set_value(section, el, SetHeader)
            if isinstance(header, SetHeader):
                (self.inbound if section == "inbound" else self.outbound).append(header)
            return
        if tag == "set-query-parameter" and section == "inbound":
            param = self.set_value(section, el, SetQueryParameter)
            if isinstance(param, SetQueryParameter):
                self.inbound.append(param)
            return
        nested = sorted({d.tag for d in el.iter() if d.tag in ACCESS_RESTRICTING})
        if nested:
            raise self.fail(
                section,
                el,
                f"contains {', '.join(f'<{t}>' for t in nested)}, which can reject callers and which the local "
                "gateway does not implement; refusing to start",
            )
        if section in ("backend", "on-error"):
            self.skip(section, el, f"NOT applied: the local gateway runs nothing in <{section}> besides <base />")
        else:
            self.skip(
                section,
                el,
                "NOT applied: not implemented locally (only rate-limit-by-key, quota-by-key, set-header and "
                "set-query-parameter are)",
            )

    # -- limits ------------------------------------------------------------------------------------

    def _check_attrs(
        self,
        section: Section,
        el: ET.Element,
        known: Iterable[str],
        refused: dict[str, str],
        ignored: dict[str, str],
    ) -> None:
        known_set = set(known)
        for attr in el.attrib:
            if attr in refused:
                raise self.fail(section, el, f"attribute {attr!r} is not implemented locally: {refused[attr]}")
            if attr in ignored:
                self.skip(section, el, f"attribute {attr!r} is ignored (the limit itself is enforced): {ignored[attr]}")
            elif attr not in known_set:
                raise self.fail(section, el, f"unknown attribute {attr!r} (APIM would reject the policy)")

    def _int(self, section: Section, el: ET.Element, attr: str) -> int:
        raw = el.get(attr)
        if raw is None:
            raise self.fail(section, el, f"attribute {attr!r} is required")
        if _EXPRESSION.match(raw):
            raise self.fail(section, el, f"{attr}={raw!r}: policy expressions are not supported locally")
        try:
            value = int(raw.strip())
        except ValueError:
            raise self.fail(section, el, f"{attr}={raw!r} is not a whole number") from None
        if value < 0:
            raise self.fail(section, el, f"{attr}={raw!r} must not be negative")
        return value

    def _counter_key(self, section: Section, el: ET.Element) -> str:
        raw = el.get("counter-key")
        if raw is None:
            raise self.fail(section, el, "attribute 'counter-key' is required")
        if _EXPRESSION.match(raw):
            if re.sub(r"\s+", "", raw) == SUBSCRIPTION_ID:
                return SUBSCRIPTION_ID
            raise self.fail(
                section,
                el,
                f"counter-key={raw!r}: the local gateway evaluates only {SUBSCRIPTION_ID} (or a literal key)",
            )
        return raw

    def rate_limit(self, section: Section, el: ET.Element) -> RateLimitByKey:
        self._check_attrs(
            section,
            el,
            known=(
                "calls",
                "renewal-period",
                "counter-key",
                "retry-after-header-name",
                "remaining-calls-header-name",
                "total-calls-header-name",
            ),
            refused={
                "increment-condition": "it changes which calls are counted",
                "increment-count": "it changes how much a call counts",
            },
            ignored={
                "retry-after-variable-name": "policy variables exist only for expressions, which are not evaluated",
                "remaining-calls-variable-name": "policy variables exist only for expressions, which are not evaluated",
            },
        )
        calls = self._int(section, el, "calls")
        period = self._int(section, el, "renewal-period")
        if calls < 1:
            raise self.fail(section, el, "calls must be at least 1")
        if not 1 <= period <= RATE_LIMIT_MAX_PERIOD_S:
            raise self.fail(section, el, f"renewal-period must be 1..{RATE_LIMIT_MAX_PERIOD_S} s in APIM, got {period}")
        return RateLimitByKey(
            calls=calls,
            renewal_period=period,
            counter_key=self._counter_key(section, el),
            retry_after_header_name=el.get("retry-after-header-name") or "Retry-After",
            remaining_calls_header_name=el.get("remaining-calls-header-name") or None,
            total_calls_header_name=el.get("total-calls-header-name") or None,
        )

    def quota(self, section: Section, el: ET.Element) -> QuotaByKey:
        self._check_attrs(
            section,
            el,
            known=("calls", "renewal-period", "counter-key"),
            refused={
                "bandwidth": "the local gateway counts calls, not kilobytes",
                "increment-condition": "it changes which calls are counted",
                "increment-count": "it changes how much a call counts",
            },
            ignored={"first-period-start": "local quota windows start at each key's first counted call"},
        )
        calls = self._int(section, el, "calls")
        period = self._int(section, el, "renewal-period")
        if calls < 1:
            raise self.fail(section, el, "calls must be at least 1")
        if period == 0:
            raise self.fail(section, el, "renewal-period=0 (a lifetime quota) is not implemented locally")
        if period < QUOTA_MIN_PERIOD_S:
            raise self.fail(
                section, el, f"renewal-period must be at least {QUOTA_MIN_PERIOD_S} s in APIM, got {period}"
            )
        return QuotaByKey(calls=calls, renewal_period=period, counter_key=self._counter_key(section, el))

    def _action(self, section: Section, el: ET.Element, attr: str) -> ValidationAction:
        raw = el.get(attr)
        if raw is None:
            raise self.fail(section, el, f"attribute {attr!r} is required")
        if _EXPRESSION.match(raw):
            raise self.fail(section, el, f"{attr}={raw!r}: policy expressions are not supported locally")
        value = raw.strip().lower()
        for action in VALIDATION_ACTIONS:
            if action == value:
                return action
        raise self.fail(section, el, f"{attr}={raw!r} (expected one of {', '.join(VALIDATION_ACTIONS)})")

    def validate_content(self, section: Section, el: ET.Element) -> ValidateContent:
        self._check_attrs(
            section,
            el,
            known=("unspecified-content-type-action", "max-size", "size-exceeded-action", "errors-variable-name"),
            refused={},
            ignored={},
        )
        if _EXPRESSION.match(el.get("errors-variable-name") or ""):
            raise self.fail(section, el, "errors-variable-name does not allow policy expressions (APIM)")
        max_size = self._int(section, el, "max-size")
        if not 1 <= max_size <= VALIDATE_CONTENT_MAX_SIZE:
            limit = VALIDATE_CONTENT_MAX_SIZE
            raise self.fail(section, el, f"max-size must be 1..{limit} bytes in APIM, got {max_size}")
        types: list[str] = []
        for child in el:
            if child.tag != "content":
                raise self.fail(
                    section,
                    el,
                    f"child <{child.tag}> is not implemented locally (only <content> is); it changes which content "
                    "type a body is checked as",
                )
            self._check_attrs(
                section,
                child,
                known=(
                    "type",
                    "validate-as",
                    "action",
                    "schema-id",
                    "schema-ref",
                    "allow-additional-properties",
                    "case-insensitive-property-names",
                ),
                refused={},
                ignored={},
            )
            media = (child.get("type") or "").strip().lower()
            if not media or _EXPRESSION.match(media):
                raise self.fail(section, el, "<content> needs a literal 'type' (e.g. application/json)")
            if (child.get("validate-as") or "").strip().lower() not in ("json", "xml", "soap"):
                raise self.fail(section, el, f"<content type={media!r}>: validate-as must be json, xml or soap")
            action = self._action(section, child, "action")
            if action == "prevent":
                raise self.fail(
                    section,
                    el,
                    f"<content type={media!r} action='prevent'> validates bodies against the API schema, which the "
                    "local gateway does not implement; refusing to start (use action='ignore', the Function app "
                    "validates every body itself)",
                )
            if action == "detect":
                self.skip(section, child, f"schema validation of {media} only logged by APIM; NOT done locally")
            types.append(media)
        return ValidateContent(
            max_size=max_size,
            size_exceeded_action=self._action(section, el, "size-exceeded-action"),
            unspecified_content_type_action=self._action(section, el, "unspecified-content-type-action"),
            content_types=tuple(types),
            errors_variable_name=el.get("errors-variable-name") or None,
        )

    # -- set-header / set-query-parameter ------------------------------------------------------------

    def set_value(
        self, section: Section, el: ET.Element, kind: type[SetHeader] | type[SetQueryParameter]
    ) -> SetHeader | SetQueryParameter | None:
        for attr in el.attrib:
            if attr not in ("name", "exists-action"):
                raise self.fail(section, el, f"unknown attribute {attr!r} (APIM would reject the policy)")
        name = (el.get("name") or "").strip()
        if not name:
            raise self.fail(section, el, "attribute 'name' is required")
        action = el.get("exists-action", "override").strip().lower()
        if action not in EXISTS_ACTIONS:
            raise self.fail(section, el, f"exists-action={action!r} (expected one of {', '.join(EXISTS_ACTIONS)})")
        exists_action: ExistsAction = next(a for a in EXISTS_ACTIONS if a == action)
        values: list[str] = []
        for child in el:
            if child.tag != "value":
                raise self.fail(section, el, f"unexpected child <{child.tag}> (only <value> is allowed)")
            values.append(child.text or "")
        if exists_action != "delete" and not values:
            raise self.fail(section, el, f"exists-action={exists_action!r} needs at least one <value>")
        if _EXPRESSION.match(name) or any(_EXPRESSION.match(v) for v in values):
            self.skip(section, el, f"NOT applied to {name!r}: policy expressions are not evaluated locally")
            return None
        return kind(name=name, values=tuple(values), exists_action=exists_action)
