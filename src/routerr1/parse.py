"""Tag parsing of router policy output.

The policy writes `<think>…</think>`, calls a pool model with
`<search>Model-Name: sub-question</search>`, receives an injected
`<information>…</information>` block, and ends with `<answer>…</answer>`.

Tags are matched exactly (lowercase, no attributes, no spaces): `<Think>` is plain text.
Nothing here raises on arbitrary policy text; only bad configuration (model names) raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routerr1.config import canonical_model_key

__all__ = [
    "TAGS",
    "PLACEHOLDER_MODELS",
    "PLACEHOLDER_QUERIES",
    "canonical_model_key",
    "ModelNameResolver",
    "SearchCall",
    "parse_search",
    "find_action",
    "last_search_content",
    "extract_answer",
    "strip_tags",
    "FormatResult",
    "FORMAT_RULES",
    "MODEL_MATCHES",
    "check_format",
]

TAGS: tuple[str, ...] = ("think", "search", "information", "answer")
_TAG_RE = re.compile(r"<(/?)(think|search|information|answer)>")

# Placeholder keys: the text lowercased with everything but letters and digits removed, so
# "Model-Name", "<model_name>" and "model name" all map to "modelname". A key that is empty
# ("...", "???") is always a placeholder. prompt.py's template placeholders must be in here.
PLACEHOLDER_MODELS: frozenset[str] = frozenset(
    {"modelname", "model", "name", "yourmodel", "llm", "llmname", "modelid", "placeholder", "xxx"}
)
PLACEHOLDER_QUERIES: frozenset[str] = frozenset(
    {
        "subquestion",
        "concretesubquestion",
        "yoursubquestion",
        "question",
        "yourquestion",
        "concretequestion",
        "query",
        "yourquery",
        "subquery",
        "placeholder",
        "xxx",
    }
)
# Wrappers a policy puts around a model name ("**Qwen**", "`Qwen`"); stripped before lookup.
_NAME_WRAPPERS = "\"'`*"
# check_format's rule sets: ours, or ours plus the extra rejections of Router-R1's
# `format_reward` (verl/trainer/main_ppo.py); docs/router-r1.md lists them.
FORMAT_RULES: tuple[str, ...] = ("routerr1", "router-r1")
# How a written model name finds its pool model: "exact" (case and separators aside) or
# "substring" (Router-R1's `check_llm_name` accepts any name containing a model's keyword).
MODEL_MATCHES: tuple[str, ...] = ("exact", "substring")
# Router-R1 rejects a search whose text contains its prompt's placeholders anywhere.
_ROUTER_R1_PLACEHOLDERS = ("llm-name", "your-query")
_UNKNOWN_MODEL = "unknown model"


class ModelNameResolver:
    """Maps what the policy wrote to an exact pool model name, tolerant to case and separators.

    `aliases` maps a canonical name to extra spellings. Two entries that canonicalize to the same
    key but point at different models raise ValueError; a redundant alias of the same model
    (e.g. "qwen 1.5b" for "Qwen-1.5B") is accepted.

    `match` "substring" also resolves a written name that is not a name or alias: to the model
    with the longest name or alias contained in it, else to the one model whose name or alias
    contains it (all canonical); ambiguity resolves to nothing. It approximates Router-R1's
    keyword matching ("qwen" anywhere means Qwen2.5-7B-Instruct).
    """

    def __init__(
        self,
        names: Sequence[str],
        aliases: Mapping[str, Sequence[str]] | None = None,
        match: str = "exact",
    ) -> None:
        if match not in MODEL_MATCHES:
            raise ValueError(f"match must be one of {MODEL_MATCHES}, got {match!r}")
        self.match = match
        if isinstance(names, str):
            raise ValueError(
                f"names must be a sequence of model names, not a single str: {names!r}"
            )
        self._names: tuple[str, ...] = tuple(names)
        if not self._names:
            raise ValueError("names is empty: the pool needs at least one model")
        # key -> (written value, target name, is_alias)
        self._index: dict[str, tuple[str, str, bool]] = {}
        for name in self._names:
            self._add(name, name, is_alias=False, field="names")
        for target, spellings in (aliases or {}).items():
            if target not in self._names:
                raise ValueError(f"aliases key {target!r} is not one of names {list(self._names)}")
            if isinstance(spellings, str):
                raise ValueError(
                    f"aliases[{target!r}] must be a sequence of strings, not a str: {spellings!r}"
                )
            for alias in spellings:
                self._add(alias, target, is_alias=True, field=f"aliases[{target!r}]")

    def _add(self, value: str, target: str, *, is_alias: bool, field: str) -> None:
        if not isinstance(value, str):
            raise ValueError(f"{field} entry must be a str, got {type(value).__name__}")
        if ":" in value:
            # parse_search splits "<model>: <query>" at the first ':'.
            raise ValueError(f"{field} entry {value!r} contains ':', which model names must not")
        key = canonical_model_key(value)
        if not key:
            raise ValueError(f"{field} entry {value!r} is empty after canonicalization")
        previous = self._index.get(key)
        if previous is not None:
            prev_value, prev_target, prev_alias = previous
            if prev_target != target or not (is_alias or prev_alias):
                raise ValueError(
                    f"model names collide after canonicalization ({key!r}): "
                    f"{prev_value!r} (-> {prev_target!r}) and {value!r} (-> {target!r})"
                )
            return
        self._index[key] = (value, target, is_alias)

    @property
    def names(self) -> tuple[str, ...]:
        """The exact pool model names, in the order given."""
        return self._names

    def resolve(self, raw: str) -> str | None:
        """Exact pool name for `raw`, or None if it names no known model."""
        if not isinstance(raw, str):
            return None
        key = canonical_model_key(raw)
        entry = self._index.get(key)
        if entry is not None:
            return entry[1]
        if self.match != "substring" or not key:
            return None
        inside = [(len(k), target) for k, (_, target, _) in self._index.items() if k in key]
        if inside:
            longest = max(n for n, _ in inside)
            targets = {t for n, t in inside if n == longest}
            return targets.pop() if len(targets) == 1 else None
        around = {target for k, (_, target, _) in self._index.items() if key in k}
        return around.pop() if len(around) == 1 else None


@dataclass(frozen=True)
class SearchCall:
    """One parsed `<search>` block. `error` is None exactly when the call is valid."""

    model: str | None  # exact pool name when resolved, else None
    query: str  # stripped query text ("" when there is none)
    raw: str  # the block content as written
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def unknown_model(self) -> bool:
        """Well-formed, but the name matches no pool model."""
        return self.error is not None and self.error.startswith(_UNKNOWN_MODEL)


def _placeholder_key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _is_placeholder(text: str, known: frozenset[str]) -> bool:
    key = _placeholder_key(text)
    return not key or key in known


def parse_search(content: str, resolver: ModelNameResolver) -> SearchCall:
    """Parse `Model-Name: sub-question` (split at the first ':'). Never raises on text."""
    if not isinstance(content, str):
        return SearchCall(None, "", repr(content), "search content is not text")
    text = content.strip()
    if ":" not in text:
        return SearchCall(
            None, "", content, "missing ':' separator; expected 'Model-Name: question'"
        )
    model_part, query_part = text.split(":", 1)
    model_text = model_part.strip().strip(_NAME_WRAPPERS).strip()
    query = query_part.strip()
    if not model_text:
        return SearchCall(None, query, content, "empty model name before ':'")
    if not query:
        return SearchCall(None, query, content, f"empty query after '{model_text}:'")
    model = resolver.resolve(model_text)
    # A real pool name wins over the placeholder list (a pool could name a model "llm").
    if model is None and _is_placeholder(model_text, PLACEHOLDER_MODELS):
        return SearchCall(
            None, query, content, f"placeholder model name {model_text!r}; use an exact name"
        )
    if _is_placeholder(query, PLACEHOLDER_QUERIES):
        return SearchCall(
            model, query, content, f"placeholder query {query!r}; write the actual sub-question"
        )
    if model is None:
        known = ", ".join(resolver.names)
        error = f"{_UNKNOWN_MODEL} {model_text!r}; known: {known}"
        return SearchCall(None, query, content, error)
    return SearchCall(model, query, content, None)


def find_action(text: str) -> tuple[str, int] | None:
    """First complete `</search>` or `</answer>` in one turn: (kind, index just after the tag)."""
    best: tuple[str, int] | None = None
    for kind in ("search", "answer"):
        closing = f"</{kind}>"
        pos = text.find(closing)
        if pos >= 0 and (best is None or pos + len(closing) < best[1]):
            best = (kind, pos + len(closing))
    return best


def _last_block_content(text: str, tag: str) -> str | None:
    # The last closing tag, then the nearest opening tag before it: robust to stray earlier tags.
    end = text.rfind(f"</{tag}>")
    if end < 0:
        return None
    opening = f"<{tag}>"
    start = text.rfind(opening, 0, end)
    if start < 0:
        return None
    return text[start + len(opening) : end]


def last_search_content(text: str) -> str | None:
    """Content of the last complete `<search>…</search>` (unstripped), or None."""
    return _last_block_content(text, "search")


def extract_answer(text: str) -> str | None:
    """Content of the last complete `<answer>…</answer>`, stripped, or None."""
    content = _last_block_content(text, "answer")
    return None if content is None else content.strip()


def strip_tags(text: str) -> str:
    """Remove our four tags from text, e.g. a pool model's reply before it is injected.

    A pool model that echoes `<answer>` or `</information>` would otherwise break the
    trajectory's format through no fault of the policy.
    """
    return _TAG_RE.sub("", text)


@dataclass(frozen=True)
class FormatResult:
    ok: bool
    reason: str | None  # the first rule that failed; None when ok

    @property
    def kind(self) -> str | None:
        """The failed rule without its particulars (block numbers, names, tags), as a metric name
        may spell it: ``invalid search 2: unknown model 'X'`` -> ``invalid_search``. Counting
        kinds over a training step shows which rule a policy breaks."""
        if self.reason is None:
            return None
        rule = re.split(r"[:(]", self.reason, maxsplit=1)[0]
        return re.sub(r"[^a-z]+", "_", re.sub(r"\d+", "", rule.lower())).strip("_") or "other"


@dataclass(frozen=True)
class _Block:
    tag: str
    start: int  # index of '<' of the opening tag
    end: int  # index just after the closing tag
    content: str


def _scan_blocks(text: str) -> tuple[list[_Block], str | None]:
    """Split text into top-level tag blocks; fail on nesting or imbalance."""
    blocks: list[_Block] = []
    open_tag: str | None = None
    open_start = open_end = 0
    for m in _TAG_RE.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if not closing:
            if open_tag is not None:
                return blocks, f"nested <{name}> inside <{open_tag}>"
            open_tag, open_start, open_end = name, m.start(), m.end()
        elif open_tag is None:
            return blocks, f"unbalanced </{name}> without an opening <{name}>"
        elif open_tag != name:
            return blocks, f"unbalanced </{name}> closes <{open_tag}>"
        else:
            blocks.append(_Block(name, open_start, m.end(), text[open_end : m.start()]))
            open_tag = None
    if open_tag is not None:
        return blocks, f"unclosed <{open_tag}>"
    return blocks, None


def _fail(reason: str) -> FormatResult:
    return FormatResult(False, reason)


def check_format(
    trajectory: str,
    resolver: ModelNameResolver,
    injected_information: int | None = None,
    rules: str = "routerr1",
) -> FormatResult:
    """Whether a full trajectory (policy text + injected information) is well-formed.

    Rules, checked in this order; `reason` names the first that fails:
      0. if `injected_information` is given, the number of `<information>` tags equals it
         (otherwise the policy wrote its own observation);
      1. every tag balanced, none nested inside another;
      2. starts with `<think>` (leading whitespace allowed);
      3. ends with `</answer>` (trailing whitespace allowed) and has exactly one answer block;
      4. every think block non-empty;
      5. as many search as information blocks, each information block directly after a
         search block (only whitespace between);
      6. every search is well-formed and names a known model.
    `rules` "router-r1" adds Router-R1's rejections: a think block that is only "...", a search
    without exactly one ':', one whose text contains "llm-name" or "your-query", and one whose
    query contains the model name as written. Never raises on any string.
    """
    if rules not in FORMAT_RULES:
        raise ValueError(f"rules must be one of {FORMAT_RULES}, got {rules!r}")
    if not isinstance(trajectory, str):
        return _fail(f"trajectory is not text ({type(trajectory).__name__})")
    if injected_information is not None:
        if trajectory.count("<information>") != injected_information:
            return _fail("policy wrote its own <information>")

    blocks, scan_error = _scan_blocks(trajectory)
    if scan_error is not None:
        return _fail(scan_error)

    if not trajectory.lstrip().startswith("<think>"):
        return _fail("does not start with <think>")
    if not trajectory.rstrip().endswith("</answer>"):
        return _fail("does not end with </answer>")
    n_answers = sum(b.tag == "answer" for b in blocks)
    if n_answers != 1:
        return _fail(f"expected exactly one <answer> block, found {n_answers}")

    for i, b in enumerate(b for b in blocks if b.tag == "think"):
        if not b.content.strip():
            return _fail(f"empty <think> block (think block {i + 1})")
        if rules == "router-r1" and b.content.strip() == "...":
            return _fail(f"<think> block {i + 1} is only '...'")

    n_search = sum(b.tag == "search" for b in blocks)
    n_info = sum(b.tag == "information" for b in blocks)
    if n_search != n_info:
        return _fail(f"{n_search} <search> blocks but {n_info} <information> blocks")
    info_seen = 0
    for prev, b in zip([None, *blocks], blocks, strict=False):
        if b.tag != "information":
            continue
        info_seen += 1
        if prev is None or prev.tag != "search" or trajectory[prev.end : b.start].strip():
            return _fail(f"<information> block {info_seen} does not directly follow a <search>")

    search_seen = 0
    for b in blocks:
        if b.tag != "search":
            continue
        search_seen += 1
        call = parse_search(b.content, resolver)
        if call.error is not None:
            return _fail(f"invalid search {search_seen}: {call.error}")
        if rules == "router-r1":
            error = _router_r1_search_error(b.content)
            if error is not None:
                return _fail(f"invalid search {search_seen}: {error}")
    return FormatResult(True, None)


def _router_r1_search_error(content: str) -> str | None:
    """Router-R1's extra search rules (`format_reward` in their verl/trainer/main_ppo.py)."""
    text = content.strip()
    if text.count(":") != 1:
        return f"{text.count(':')} ':' separators; Router-R1's rules want exactly one"
    lowered = text.lower()
    for placeholder in _ROUTER_R1_PLACEHOLDERS:
        if placeholder in lowered:
            return f"contains the placeholder {placeholder!r}"
    model_text, query = (part.strip() for part in lowered.split(":"))
    if model_text in query:
        return f"the query repeats the model name {model_text!r}"
    return None
