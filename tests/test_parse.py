"""Tests for tag parsing: model names, search calls, action cutting, format checking."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routerr1.parse import (
    PLACEHOLDER_MODELS,
    PLACEHOLDER_QUERIES,
    FormatResult,
    ModelNameResolver,
    canonical_model_key,
    check_format,
    extract_answer,
    find_action,
    last_search_content,
    parse_search,
    strip_tags,
)

NAMES = ["Qwen2.5-Coder-1.5B", "SmolLM2-135M", "Gemma-3-270M"]


@pytest.fixture
def resolver() -> ModelNameResolver:
    return ModelNameResolver(NAMES, {"Qwen2.5-Coder-1.5B": ["qwen-large", "qwen 1.5b"]})


# --- model names -------------------------------------------------------------------------


def test_canonical_model_key() -> None:
    assert canonical_model_key("qwen2.5 coder 1.5b") == canonical_model_key("Qwen2.5-Coder-1.5B")
    assert canonical_model_key(" Smol_LM2\t-135M ") == "smollm2135m"


def test_resolver_resolves_names_and_aliases(resolver: ModelNameResolver) -> None:
    assert resolver.resolve("qwen2.5 coder 1.5b") == "Qwen2.5-Coder-1.5B"
    assert resolver.resolve("QWEN_LARGE") == "Qwen2.5-Coder-1.5B"
    assert resolver.resolve("smollm2-135m") == "SmolLM2-135M"
    assert resolver.resolve("gpt-4") is None
    assert resolver.resolve("") is None
    assert resolver.names == tuple(NAMES)


def test_resolver_rejects_colliding_names() -> None:
    with pytest.raises(ValueError, match=r"'A-B'.*'a_b'"):
        ModelNameResolver(["A-B", "a_b"], {})


def test_resolver_rejects_alias_colliding_with_other_model() -> None:
    with pytest.raises(ValueError, match=r"'SmolLM2-135M'.*'smollm2 135m'"):
        ModelNameResolver(NAMES, {"Gemma-3-270M": ["smollm2 135m"]})
    with pytest.raises(ValueError, match="collide"):
        ModelNameResolver(NAMES, {"Gemma-3-270M": ["tiny"], "SmolLM2-135M": ["TINY"]})


def test_resolver_accepts_redundant_alias_of_same_model() -> None:
    r = ModelNameResolver(["Qwen-1.5B"], {"Qwen-1.5B": ["qwen 1.5b", "QWEN_1.5B"]})
    assert r.resolve("qwen1.5b") == "Qwen-1.5B"


@pytest.mark.parametrize(
    ("names", "aliases", "match"),
    [
        (["a:b"], {}, "':'"),
        (["--"], {}, "empty"),
        ([], {}, "names is empty"),
        ("Qwen", {}, "single str"),
        (["A"], {"B": ["x"]}, "aliases key 'B'"),
        (["A"], {"A": "x"}, r"aliases\['A'\]"),
    ],
)
def test_resolver_bad_config(names, aliases, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelNameResolver(names, aliases)


# --- search calls --------------------------------------------------------------------------


def test_parse_search_valid(resolver: ModelNameResolver) -> None:
    call = parse_search(" qwen 1.5b : Who wrote Hamlet? ", resolver)
    assert call.ok and call.error is None
    assert call.model == "Qwen2.5-Coder-1.5B"
    assert call.query == "Who wrote Hamlet?"
    assert call.raw == " qwen 1.5b : Who wrote Hamlet? "


def test_parse_search_splits_at_first_colon(resolver: ModelNameResolver) -> None:
    call = parse_search("SmolLM2-135M: What happened at 10:30 on D-Day?", resolver)
    assert call.ok
    assert call.query == "What happened at 10:30 on D-Day?"


def test_parse_search_strips_name_wrappers(resolver: ModelNameResolver) -> None:
    call = parse_search("**Gemma-3-270M**: capital of Peru?", resolver)
    assert call.model == "Gemma-3-270M" and call.ok


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("Who wrote Hamlet?", "missing ':'"),
        (": Who wrote Hamlet?", "empty model name"),
        ("SmolLM2-135M:   ", "empty query"),
        ("Model-Name: Who wrote Hamlet?", "placeholder model name"),
        ("<model>: Who wrote Hamlet?", "placeholder model name"),
        ("...: Who wrote Hamlet?", "placeholder model name"),
        ("SmolLM2-135M: sub-question", "placeholder query"),
        ("SmolLM2-135M: concrete sub-question", "placeholder query"),
        ("SmolLM2-135M: your question", "placeholder query"),
        ("SmolLM2-135M: ...", "placeholder query"),
        ("SmolLM2-135M: <question>", "placeholder query"),
        ("GPT-4: Who wrote Hamlet?", "unknown model 'GPT-4'"),
    ],
)
def test_parse_search_invalid(resolver: ModelNameResolver, content: str, fragment: str) -> None:
    call = parse_search(content, resolver)
    assert not call.ok
    assert call.error is not None and fragment in call.error
    assert call.raw == content


def test_parse_search_error_kinds_are_distinct(resolver: ModelNameResolver) -> None:
    contents = ["x", ": q", "SmolLM2-135M:", "Model-Name: q", "SmolLM2-135M: ...", "nope: q"]
    errors = [parse_search(c, resolver).error for c in contents]
    first_words = {e.split(" ")[0] + e.split(" ")[1] for e in errors if e}
    assert len(first_words) == len(contents)


def test_known_model_beats_placeholder_list() -> None:
    r = ModelNameResolver(["llm"])
    assert "llm" in PLACEHOLDER_MODELS
    assert parse_search("LLM: who?", r).ok


def test_placeholder_sets_cover_template_words() -> None:
    assert {"modelname", "model"} <= PLACEHOLDER_MODELS
    assert {"subquestion", "yourquestion", "concretesubquestion"} <= PLACEHOLDER_QUERIES


# --- find_action / extraction ----------------------------------------------------------------


def test_find_action_search_and_answer() -> None:
    text = "<think>x</think>\n<search>A: q</search>"
    assert find_action(text) == ("search", len(text))
    text = "<think>x</think><answer>Paris</answer>"
    assert find_action(text) == ("answer", len(text))


def test_find_action_first_wins_and_cuts_merged_text() -> None:
    # Generation overran the tag (merged token ">\n" and further text): cut right after it.
    text = (
        "<think>x</think><search>A: q</search>\n<information>fake</information><answer>y</answer>"
    )
    kind, end = find_action(text)  # type: ignore[misc]
    assert kind == "search"
    assert text[:end].endswith("</search>")
    assert text[end:].startswith("\n<information>")
    text = "<answer>a</answer> <search>A: q</search>"
    assert find_action(text) == ("answer", len("<answer>a</answer>"))


def test_find_action_none_for_incomplete() -> None:
    assert find_action("<think>still thinking</think><search>A: q</sear") is None
    assert find_action("") is None
    assert find_action("<answer>x</Answer>") is None


def test_last_search_content_and_extract_answer() -> None:
    text = "<search> A: q1 </search><information>i</information><search>B: q2</search>"
    assert last_search_content(text) == "B: q2"
    assert last_search_content("<search>unclosed") is None
    assert last_search_content("no tags </search>") is None
    traj = "<answer> first </answer> more <answer>  Second  </answer>"
    assert extract_answer(traj) == "Second"
    assert extract_answer("<answer>open only") is None
    # A stray opening tag before the final block does not leak into the answer.
    assert extract_answer("<answer>x <answer> y </answer>") == "y"


def test_strip_tags() -> None:
    assert strip_tags("Paris <answer>Paris</answer></information>") == "Paris Paris"
    assert strip_tags("a <b> c") == "a <b> c"


# --- check_format: one test per rule, pass and fail ------------------------------------------

GOOD = (
    "<think>I should ask a model.</think>\n"
    "<search>SmolLM2-135M: Who wrote Hamlet?</search>\n"
    "<information>William Shakespeare</information>\n"
    "<think>It says Shakespeare.</think>\n"
    "<answer>William Shakespeare</answer>"
)


def test_good_trajectory_passes(resolver: ModelNameResolver) -> None:
    assert check_format(GOOD, resolver) == FormatResult(True, None)
    assert check_format("  \n" + GOOD + " \n\n", resolver).ok
    assert check_format("<think>easy</think><answer>4</answer>", resolver).ok


def test_rule_balanced_unclosed(resolver: ModelNameResolver) -> None:
    r = check_format("<think>x</think><answer>y", resolver)
    assert not r.ok and r.reason == "unclosed <answer>"


def test_rule_balanced_stray_close(resolver: ModelNameResolver) -> None:
    r = check_format("<think>x</think></search><answer>y</answer>", resolver)
    assert not r.ok and "unbalanced </search>" in (r.reason or "")


def test_rule_balanced_mismatched_close(resolver: ModelNameResolver) -> None:
    r = check_format("<think>x</answer>", resolver)
    assert not r.ok and r.reason == "unbalanced </answer> closes <think>"


def test_rule_not_nested(resolver: ModelNameResolver) -> None:
    r = check_format("<think>x <answer>y</answer></think><answer>y</answer>", resolver)
    assert not r.ok and r.reason == "nested <answer> inside <think>"


def test_rule_starts_with_think(resolver: ModelNameResolver) -> None:
    r = check_format("Sure! <think>x</think><answer>y</answer>", resolver)
    assert not r.ok and r.reason == "does not start with <think>"
    r = check_format("<answer>y</answer>", resolver)
    assert r.reason == "does not start with <think>"


def test_rule_ends_with_answer(resolver: ModelNameResolver) -> None:
    r = check_format("<think>x</think><answer>y</answer> trailing words", resolver)
    assert not r.ok and r.reason == "does not end with </answer>"
    r = check_format("<think>x</think>", resolver)
    assert r.reason == "does not end with </answer>"


def test_rule_exactly_one_answer(resolver: ModelNameResolver) -> None:
    r = check_format("<think>x</think><answer>a</answer><answer>b</answer>", resolver)
    assert not r.ok and r.reason == "expected exactly one <answer> block, found 2"


def test_rule_think_non_empty(resolver: ModelNameResolver) -> None:
    r = check_format("<think> \n </think><answer>y</answer>", resolver)
    assert not r.ok and "empty <think>" in (r.reason or "")
    bad_second = GOOD.replace("<think>It says Shakespeare.</think>", "<think></think>")
    r = check_format(bad_second, resolver)
    assert r.reason == "empty <think> block (think block 2)"


def test_rule_search_information_count(resolver: ModelNameResolver) -> None:
    no_info = GOOD.replace("<information>William Shakespeare</information>\n", "")
    r = check_format(no_info, resolver)
    assert not r.ok and r.reason == "1 <search> blocks but 0 <information> blocks"


def test_rule_information_follows_search(resolver: ModelNameResolver) -> None:
    # Same counts, but the information block comes after a think, not the search.
    traj = (
        "<think>a</think><search>SmolLM2-135M: q?</search><think>b</think>"
        "<information>i</information><answer>y</answer>"
    )
    r = check_format(traj, resolver)
    assert not r.ok and r.reason == "<information> block 1 does not directly follow a <search>"
    # Non-whitespace text between search and information also breaks adjacency.
    traj = (
        "<think>a</think><search>SmolLM2-135M: q?</search> hmm <information>i</information>"
        "<answer>y</answer>"
    )
    assert check_format(traj, resolver).reason == (
        "<information> block 1 does not directly follow a <search>"
    )


def test_rule_search_well_formed(resolver: ModelNameResolver) -> None:
    bad = GOOD.replace("SmolLM2-135M: Who wrote Hamlet?", "Who wrote Hamlet?")
    r = check_format(bad, resolver)
    assert not r.ok and (r.reason or "").startswith("invalid search 1: missing ':'")


def test_rule_search_known_model(resolver: ModelNameResolver) -> None:
    bad = GOOD.replace("SmolLM2-135M", "GPT-5")
    r = check_format(bad, resolver)
    assert not r.ok and (r.reason or "").startswith("invalid search 1: unknown model 'GPT-5'")


def test_rule_policy_written_information(resolver: ModelNameResolver) -> None:
    assert check_format(GOOD, resolver, injected_information=1).ok
    r = check_format(GOOD, resolver, injected_information=0)
    assert not r.ok and r.reason == "policy wrote its own <information>"


def test_first_failing_rule_is_reported(resolver: ModelNameResolver) -> None:
    # Both "does not start with <think>" and "empty think" apply; the start rule comes first.
    r = check_format("x<think></think><answer>y</answer>", resolver)
    assert r.reason == "does not start with <think>"


def test_non_string_input_does_not_raise(resolver: ModelNameResolver) -> None:
    r = check_format(None, resolver)  # type: ignore[arg-type]
    assert not r.ok and "not text" in (r.reason or "")


# --- property tests --------------------------------------------------------------------------

_FRAGMENTS = [
    "<think>",
    "</think>",
    "<search>",
    "</search>",
    "<information>",
    "</information>",
    "<answer>",
    "</answer>",
    "<Think>",
    "</answer",
    "<",
    ">",
    ":",
    "SmolLM2-135M: who?",
    "Model-Name: sub-question",
    " ",
    "\n",
    "Paris",
    "日本語",
    "🙂",
    "\u200b",
]

fragments = st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=20))
adversarial = st.lists(fragments, max_size=60).map("".join)
# Long text: a short adversarial piece repeated up to ~50k characters.
long_text = st.tuples(adversarial, st.integers(min_value=1, max_value=2500)).map(
    lambda t: (t[0] * t[1])[:50_000]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(adversarial, long_text, st.text()), injected=st.none() | st.integers(0, 5))
def test_check_format_never_raises(text: str, injected: int | None) -> None:
    resolver = ModelNameResolver(NAMES)
    result = check_format(text, resolver, injected_information=injected)
    assert isinstance(result.ok, bool)
    assert (result.reason is None) == result.ok
    find_action(text)
    last_search_content(text)
    extract_answer(text)


_think = st.text(alphabet="abc xyz", min_size=1, max_size=20).filter(lambda s: s.strip())
_query = st.text(alphabet="abcdefgh ?", min_size=1, max_size=20).filter(
    lambda s: sum(c.isalnum() for c in s) >= 3
)
_turn = st.tuples(_think, st.sampled_from(NAMES), _query, st.text(alphabet="xyz 12", max_size=20))


@settings(max_examples=200, deadline=None)
@given(turns=st.lists(_turn, max_size=4), final=_think, answer=st.text(alphabet="ab ", max_size=9))
def test_generated_well_formed_trajectories_pass(turns, final: str, answer: str) -> None:
    resolver = ModelNameResolver(NAMES)
    parts = [
        f"<think>{t}</think>\n<search>{m}: {q}</search>\n<information>{i}</information>\n"
        for t, m, q, i in turns
    ]
    traj = "".join(parts) + f"<think>{final}</think>\n<answer>{answer}</answer>"
    result = check_format(traj, resolver, injected_information=len(turns))
    assert result == FormatResult(True, None), result.reason
    assert extract_answer(traj) == answer.strip()


def test_failure_kind_drops_the_particulars(resolver: ModelNameResolver) -> None:
    """Failures of one rule share a kind whatever block, name or count they name."""
    unknown = check_format(GOOD.replace("SmolLM2-135M", "GPT-5"), resolver)
    no_colon = check_format(GOOD.replace("SmolLM2-135M: Who", "Who"), resolver)
    assert unknown.kind == no_colon.kind == "invalid_search"
    no_info = check_format(
        GOOD.replace("<information>William Shakespeare</information>\n", ""), resolver
    )
    assert no_info.kind == "search_blocks_but_information_blocks"
    empty_second = check_format(
        GOOD.replace("<think>It says Shakespeare.</think>", "<think></think>"), resolver
    )
    assert empty_second.kind == "empty_think_block"
    assert check_format("x", resolver).kind == "does_not_start_with_think"
    assert check_format(GOOD, resolver).kind is None
