"""Removing credentials from free text before Charter records or shows it.

Why this exists: the ledger is append-only and hash-chained. Whatever is written there is
kept for good -- it cannot be edited or deleted without breaking the chain that ``charter
verify`` checks -- and ledgers are shared, exported and replayed. Error texts come from
servers Charter does not control: a provider or a proxy in front of it that echoes the
request's ``Authorization`` header in its error body, an HTTP executor's endpoint that dumps
the request it got. Such text is scrubbed *where the error is built*, before it can reach an
event.

:func:`scrub` replaces each credential it finds with :data:`REDACTED`, keeping the text
around it (and an authorization scheme such as ``Bearer``) so the error is still useful:
``Authorization: Bearer [REDACTED]``. What it catches, in the order it looks:

1. **Secrets this process holds**: the exact value of every environment variable whose name
   contains ``KEY``, ``TOKEN``, ``SECRET``, ``PASSWORD``, ``PASSWD``, ``CREDENTIAL`` or
   ``AUTH`` (not ``AUTHOR``), case-insensitively, when the value has 8 characters or more and
   is not a boolean-like or common configuration word (``true``, ``disabled``,
   ``localhost``, ...). Also their JSON-escaped and URL-encoded forms. The environment is
   read at every call (so a key set after import is covered); the compiled pattern is cached
   by the relevant values.
2. **Credential headers**: ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and
   ``Set-Cookie`` followed by ``:`` or ``=``, in header-like text (the value runs to the end
   of the line), in JSON or Python-repr echoes (``"authorization": "Bearer sk-..."``, also
   with escaped quotes), any scheme (a known scheme word -- ``Bearer``, ``Basic``,
   ``Token``, ``Digest``, ... -- is kept).
3. **Secret-named fields**: header names, JSON/repr keys and query or form parameters whose
   name is, or ends in, ``api-key``/``api_key``/``apikey``, ``access_key``, ``secret_key``,
   ``private_key``, ``access_token``, ``refresh_token``, ``id_token``, ``client_secret``,
   ``password``, ``passwd``, ``passphrase``, ``secret``, ``token``, ``credential(s)``,
   ``signature`` or ``auth`` (``x-api-key: ...``, ``"openai_api_key": "..."``,
   ``?api_key=...&x=1`` -- the value ends at ``&``, so ``x=1`` survives). ``tokens``,
   ``max_tokens`` or ``token_type`` are not secret names.
4. **Passwords in URLs**: ``scheme://user:password@host`` becomes
   ``scheme://user:[REDACTED]@host``.
5. **Well-known key shapes, anywhere**: OpenAI and Anthropic (``sk-...``, ``sk-proj-...``,
   ``sk-ant-...``; at least 20 characters after ``sk-``, so the word ``sk`` or ``sk-learn``
   is not a key), Stripe secret and restricted keys (``sk_live_...``, ``rk_test_...``), AWS
   access key ids (``AKIA``/``ASIA`` + 16), GitHub tokens (``ghp_``, ``gho_``, ``ghu_``,
   ``ghs_``, ``ghr_``, ``github_pat_``), Slack tokens (``xoxb-``, ``xoxa-``, ``xoxp-``,
   ``xoxr-``, ``xoxs-``), JWTs (``eyJ....eyJ....sig``), Google API keys (``AIza...``) and
   PEM private key blocks.

It errs towards over-redaction: a harmless word after ``token:`` is masked too, because a
false positive costs a little debugging context while a false negative is permanent.
Ordinary prose, e-mail addresses, order ids and IBANs are left alone. It is not a
guarantee -- a secret with no recognisable name, shape or environment variable can still
get through -- so errors are also kept short where they are built.

Cost: a handful of precompiled regular expressions, one pass per family; it is meant for
error texts and other free text from outside, not for every event.

:func:`scrub_value` applies :func:`scrub` to every string value of a JSON-like structure
(dict keys are left as they are) and returns a new structure.
"""

from __future__ import annotations

import functools
import json
import os
import re
from typing import Any, TypeVar, cast
from urllib.parse import quote

__all__ = ["REDACTED", "scrub", "scrub_value"]

#: What a credential is replaced with.
REDACTED = "[REDACTED]"

_T = TypeVar("_T")

# -- 1. secrets of this process ---------------------------------------------------------
_SECRET_ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH(?!OR)", re.I)
_MIN_SECRET_LEN = 8
#: Values of secret-looking variables that are configuration, not secrets.
_NOT_SECRETS = frozenset(
    {
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "none",
        "null",
        "nil",
        "undefined",
        "enabled",
        "disabled",
        "required",
        "optional",
        "default",
        "unknown",
        "localhost",
        "127.0.0.1",
    }
)


def _is_secret_value(value: str) -> bool:
    return len(value) >= _MIN_SECRET_LEN and value.strip().lower() not in _NOT_SECRETS


def _env_secrets() -> tuple[str, ...]:
    """The values of secret-looking environment variables, as they are now."""
    return tuple(
        sorted(
            {v for k, v in os.environ.items() if _SECRET_ENV_NAME.search(k) and _is_secret_value(v)}
        )
    )


@functools.lru_cache(maxsize=8)
def _env_pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for value in values:
        forms.add(value)
        forms.add(json.dumps(value)[1:-1])  # as it appears inside a JSON string
        forms.add(quote(value, safe=""))  # as it appears in a URL or form body
    forms = {f for f in forms if len(f) >= _MIN_SECRET_LEN}
    if not forms:
        return None
    # longest first, so that a value containing another is replaced whole
    ordered = sorted(forms, key=lambda f: (-len(f), f))
    return re.compile("|".join(re.escape(f) for f in ordered))


# -- 2. and 3. credential headers and secret-named fields -------------------------------
#: Authorization schemes kept in front of the redacted credential.
_SCHEMES = (
    r"(?:Bearer|Basic|Token|Digest|Negotiate|NTLM|Bot|ApiKey|Api-Key|Key|OAuth|DPoP|SSWS|"
    r"HMAC|AWS4-HMAC-SHA256|GoogleLogin|Splunk)"
)
_SCHEME_PREFIX = re.compile(rf"^({_SCHEMES}[ \t]+)(?=\S)", re.I)
# the value, quoted (three ways) or bare; the bare form is given per family
_QUOTED = r"""
    "(?P<dq>(?:[^"\\\r\n]|\\.)*)"          # "JSON string"
  | \\"(?P<eq>(?:(?!\\")[^\r\n])*)\\"      # \"escaped, inside another string\"
  | '(?P<sq>[^'\r\n]*)'                    # 'Python repr'
"""
_KEY_END = r"""(?![\w-])(?P<kq>\\?["'])?(?P<sep>[ \t]*[:=][ \t]*)"""

_HEADERS = re.compile(
    r"""(?<![\w-])(?P<name>(?:proxy-)?authorization|(?:set-)?cookie)"""
    + _KEY_END
    + r"(?:"
    + _QUOTED
    # a scheme with auth-params, some quoted (Digest username="u", response="...")
    + r"""| (?P<params>[A-Za-z][\w-]*[ \t]+[\w-]+=(?:"[^"\r\n]*"|[^\s,"]*)
                      (?:[ \t]*,[ \t]*[\w-]+=(?:"[^"\r\n]*"|[^\s,"]*))*)"""
    # header-like: the rest of the line, up to a quote or a backslash (an escape sequence
    # in a JSON string), without trailing blanks
    + r"""| (?P<bare>[^\s"'\\<>](?:[^\r\n"'\\<>]*[^\s"'\\<>])?)
    )""",
    re.I | re.X,
)

_SECRET_NAMES = r"""
    api[-_]?key | access[-_]?key | secret[-_]?key | private[-_]?key
  | access[-_]?token | refresh[-_]?token | id[-_]?token | client[-_]?secret
  | password | passwd | passphrase | secret | token | credentials? | signature | auth
"""
_FIELDS = re.compile(
    r"(?<![\w-])(?P<name>[\w-]*?(?:"
    + _SECRET_NAMES
    + r"))"
    + _KEY_END
    + r"(?:"
    + _QUOTED
    # one token, ending at blanks, quotes, '&' (the next query parameter) and punctuation;
    # an authorization scheme in front of it is taken with it
    + r"""| (?P<bare>(?:"""
    + _SCHEMES
    + r"""[ \t]+)?[^\s"'\\<>&,;)}\]]+)
    )""",
    re.I | re.X,
)
_NOT_VALUES = frozenset({"null", "none", "true", "false", "nil", "undefined"})


def _mask(value: str) -> str:
    """``value`` redacted, keeping an authorization scheme in front of it."""
    if not value or value.startswith(REDACTED[:-1]) or value.lower() in _NOT_VALUES:
        return value
    scheme = _SCHEME_PREFIX.match(value)
    if scheme is not None:
        rest = value[scheme.end() :]
        return scheme.group(1) + (rest if rest.startswith(REDACTED[:-1]) else REDACTED)
    return REDACTED


def _replace_field(m: re.Match[str]) -> str:
    head = m.group("name") + (m.group("kq") or "") + m.group("sep")
    if m.group("dq") is not None:
        return f'{head}"{_mask(m.group("dq"))}"'
    if m.group("eq") is not None:
        return f'{head}\\"{_mask(m.group("eq"))}\\"'
    if m.group("sq") is not None:
        return f"{head}'{_mask(m.group('sq'))}'"
    return head + _mask(m.groupdict().get("params") or m.group("bare"))


# -- 4. passwords in URLs -----------------------------------------------------------------
_URL_PASSWORD = re.compile(
    r"""(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/?#@"'<>\\]*):(?P<password>[^\s/?#@"'<>\\]+)@""",
    re.I,
)

# -- 5. well-known key shapes ---------------------------------------------------------------
_SHAPES = re.compile(
    r"""
      (?<![\w-])sk-[A-Za-z0-9][A-Za-z0-9_-]{19,}                 # OpenAI, Anthropic
    | (?<![\w-])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}         # Stripe
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                              # AWS access key id
    | \bgh[pousr]_[A-Za-z0-9]{20,}\b                             # GitHub
    | \bgithub_pat_[A-Za-z0-9_]{20,}
    | \bxox[abprs]-[A-Za-z0-9-]{10,}                             # Slack
    | \beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*  # JWT
    | \bAIza[0-9A-Za-z_-]{30,}                                   # Google API key
    | -----BEGIN[A-Z ]*PRIVATE\ KEY-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE\ KEY-----|\Z)
    """,
    re.X,
)


def scrub(text: str) -> str:
    """``text`` with every credential it recognises replaced by :data:`REDACTED`."""
    if not text:
        return text
    env = _env_pattern(_env_secrets())
    if env is not None:
        text = env.sub(REDACTED, text)
    text = _HEADERS.sub(_replace_field, text)
    text = _FIELDS.sub(_replace_field, text)
    text = _URL_PASSWORD.sub(rf"\g<head>:{REDACTED}@", text)
    return _SHAPES.sub(REDACTED, text)


def scrub_value(value: _T) -> _T:
    """A copy of a JSON-like ``value`` with :func:`scrub` applied to every string in it.

    Dict keys are kept as they are, but a string under a credential name
    (``{"Authorization": "Bearer abc"}``, ``{"api_key": "abc"}``) is masked whole, as it
    would be in text. Lists and tuples keep their type; other values (numbers, booleans,
    ``None``) are returned unchanged.
    """
    return cast(_T, _scrub_any(value))


_SECRET_KEY = re.compile(
    r"(?:proxy-)?authorization|(?:set-)?cookie|[\w-]*?(?:" + _SECRET_NAMES + ")", re.I | re.X
)


def _scrub_any(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {
            k: _mask(scrub(v))
            if isinstance(k, str) and isinstance(v, str) and _SECRET_KEY.fullmatch(k)
            else _scrub_any(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub_any(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrub_any(v) for v in value)
    return value
