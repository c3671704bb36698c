"""Golden tests for the Flan 2021 catalog, part A: 36 of FLAN's Flan 2021 tasks (aeslc ... para_crawl_enes).

Each task's fixture rows (tests/fixtures/hub, the Hugging Face dataset's schema, made-up content) render through the
task spec in task_registry/flan/flan2021 exactly as FLAN renders them. The references here are written independently
of flanmix's field mappings: FLAN's preprocessing of each dataset (flan/v2/task_configs_v1.py, re-derived in plain
Python, regexes with RE2's semantics: `\\s` is [\\t\\n\\f\\r ], `\\w` is [0-9A-Za-z_], `.` stops at a newline) on the
Hugging Face row, then FLAN's substitution rule (split on `({\\w*})`, each `{name}` replaced by its value) over FLAN's
own template tables; few-shot prompts follow FLAN's assembly formula.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flan_reference import flan_fewshot, flan_format

from flanmix.batch import Resolver, render_request
from flanmix.importers.flan_source import flan_key_slug, read_flan_tables
from flanmix.registry import load_task_file
from flanmix.task import Example, compile_filter

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "task_registry" / "flan" / "flan2021"
FIXTURES = REPO / "tests" / "fixtures" / "hub"
WS = r"[\t\n\f\r ]"  # RE2's \s

Row = dict
Features = dict


def numbered(items: list[str]) -> str:
    """FLAN's numbered_items_str: "1. a\\n2. b"."""
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))


def labelled(options: list[str], label: int) -> Features:
    return {"options": options, "answer": options[label]}


# ---------------------------------------------------------------- FLAN's preprocessing, per task (HF row -> features)

def anli(r: Row) -> Features:
    return {"context": r["premise"], "hypothesis": r["hypothesis"],
            **labelled(["Yes", "It's impossible to say", "No"], r["label"])}


def arc(r: Row) -> Features:
    key = r["answerKey"]
    index = "ABCDE".index(key) if key in "ABCDE" else int(key) - 1  # TFDS: answerKey as a class index over A-E
    return {"question": r["question"], "options": r["choices"]["text"], "answer": r["choices"]["text"][index]}


def bool_q(r: Row) -> Features:
    title, text = r["passage"].split(" -- ", 1)  # SuperGLUE's passage is "<page title> -- <passage>"
    return {"title": title, "text": text, "question": r["question"], **labelled(["no", "yes"], r["label"])}


def cnn_dailymail(r: Row) -> Features:
    article = r["article"]
    for sep in ["2013 . ", "2014 . ", "2012 . ", ") -- "]:
        article = article.split(sep)[-1]
    highlights = re.sub(r" \.", ".", r["highlights"]).replace("\n", " ")
    return {"text": article, "highlights": highlights}


def dart(r: Row) -> Features:
    flat = [" ".join(triple) for triple in r["tripleset"]]  # TFDS gem/dart: one string per triple
    return {"tripleset": re.sub(r"\[(.*?)\]", "", "; ".join(flat)), "tripleset_newline": "\n".join(flat),
            "target": r["target"]}


def hellaswag(r: Row) -> Features:
    context = re.sub(r"\[header\]" + WS, "", r["ctx"])
    context = re.sub(r"\[.*?\]" + WS, "\n", context)
    options = [re.sub(r"\[.*?\]" + WS, "", ending) for ending in r["endings"]]
    return {"context": context, **labelled(options, int(r["label"]))}


def lambada(r: Row) -> Features:
    passage = r["text"].strip(" \t\n\v\f\r")  # tf.strings.strip: ASCII whitespace
    answer = passage.split(" ")[-1]
    return {"sentence": passage[:len(passage) - len(answer) - 1], "answer": answer}


def no_punct(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\t\n\f\r ]", "", text)  # RE2 [^\w\s]


def gigaword_keep(r: Row) -> bool:
    text = r["document"] + r["summary"]
    return not re.fullmatch(r".*UNK.*", text) and not re.fullmatch(r".*#.*", text)


REFERENCES: dict[str, Callable[[Row], Features]] = {
    "aeslc": lambda r: {"body": re.sub(r"\n", " ", r["email_body"]), "subject": re.sub(r"\n", "", r["subject_line"])},
    "ag_news_subset": lambda r: {"title": r["title"], "text": r["description"],
                                 **labelled(["World", "Sports", "Business", "Science/Tech"], r["label"] - 1)},
    "anli_r1": anli, "anli_r2": anli, "anli_r3": anli,
    "arc_challenge": arc, "arc_easy": arc,
    "bool_q": bool_q,
    "cb": lambda r: {"premise": r["premise"], "hypothesis": r["hypothesis"],
                     **labelled(["Yes", "No", "It's impossible to say"], r["label"])},
    "cnn_dailymail": cnn_dailymail,
    "cola": lambda r: {"sentence": r["sentence"], **labelled(["unacceptable", "acceptable"], r["label"])},
    "common_gen": lambda r: {"concepts": ", ".join(r["concepts"]), "concepts_newline": "\n".join(r["concepts"]),
                             "target": r["target"]},
    "copa": lambda r: {"premise": r["premise"], "question": r["question"],
                       **labelled([r["choice1"], r["choice2"]], r["label"])},
    "coqa": lambda r: {"text": r["story"], "numbered_questions": numbered(r["questions"]),
                       "numbered_answers": numbered(r["answers"]["input_text"])},
    "cosmos_qa": lambda r: {"context": r["context"], "question": r["question"],
                            **labelled([r[f"answer{i}"] for i in range(4)], r["label"])},
    "dart": dart,
    "definite_pronoun_resolution": lambda r: {"sentence": r["sentence"], "pronoun": r["pronoun"],
                                              **labelled(r["candidates"], r["label"])},
    "drop": lambda r: {"context": r["passage"], "question": r["question"], "answer": r["answers_spans"]["spans"][0]},
    "e2e_nlg": lambda r: {"meaning_representation": re.sub(r"\]", "", re.sub(r"\[", " = ",
                                                                              r["meaning_representation"])),
                          "target": r["human_reference"]},
    "fix_punct": lambda r: {"no_punct": no_punct(r["translation"]["en"]), "answer": r["translation"]["en"]},
    "gigaword": lambda r: {"text": r["document"], "summary": r["summary"]},
    "glue_mrpc": lambda r: {"sentence1": r["sentence1"], "sentence2": r["sentence2"],
                            **labelled(["no", "yes"], r["label"])},
    "glue_qqp": lambda r: {"question1": re.sub('""', "'", r["question1"]),
                           "question2": re.sub('""', "'", r["question2"]), **labelled(["no", "yes"], r["label"])},
    "hellaswag": hellaswag,
    "imdb_reviews": lambda r: {"text": re.sub("<br />", "\n", r["text"]),
                               **labelled(["negative", "positive"], r["label"])},
    "lambada": lambada,
    "math_dataset": lambda r: {"question": r["question"], "answer": r["answer"]},
    "mnli": lambda r: {"premise": r["premise"], "hypothesis": r["hypothesis"],
                       **labelled(["yes", "it is not possible to tell", "no"], r["label"])},
    "multi_news": lambda r: {"text": r["document"], "summary": r["summary"]},
    "multirc": lambda r: {"paragraph": r["paragraph"], "question": r["question"], "response": r["answer"],
                          **labelled(["no", "yes"], r["label"])},
    "natural_questions": lambda r: {"question": r["question"] + "?", "answer": r["answer"][0]},
    "newsroom": lambda r: {"text": r["text"], "title": r["title"], "summary": r["summary"]},
    "openbookqa": lambda r: {"question": r["question_stem"], "fact": r["fact1"], "options": r["choices"]["text"],
                             "answer": r["choices"]["text"]["ABCD".index(r["answerKey"])]},
    "opinion_abstracts_idebate": lambda r: {
        "claim": r["_claim"], "debate_name": r["_debate_name"],
        "argument_sentences": numbered(r["_argument_sentences"]["value"][:10])},
    "opinion_abstracts_rotten_tomatoes": lambda r: {
        "critic_consensus": r["_critic_consensus"], "movie": re.sub("_", " ", r["_movie_name"]),
        "first_review": r["_critics"]["value"][0], "numbered_reviews": numbered(r["_critics"]["value"][:10])},
    "para_crawl_enes": lambda r: {"lang1": "English", "lang2": "Spanish", "sent1": r["translation"]["en"],
                                  "sent2": r["translation"]["es"]},
}

# FLAN's row filters (rows a reference keeps; every other task keeps every row).
KEEP: dict[str, Callable[[Row], bool]] = {
    "aeslc": lambda r: len(r["email_body"] + r["subject_line"]) > 0,
    "arc_challenge": lambda r: len(r["choices"]["text"]) == 4,
    "arc_easy": lambda r: len(r["choices"]["text"]) == 4,
    "fix_punct": lambda r: no_punct(r["translation"]["en"]) != r["translation"]["en"],
    "gigaword": gigaword_keep,
    "hellaswag": lambda r: r["label"] in ("0", "1", "2", "3"),
}

# name -> (FLAN template key, Flan 2021 cluster, hub source (name, config, split), verified)
CATALOG = {
    "aeslc": ("aeslc", "summarization", ("Yale-LILY/aeslc", None, "train"), True),
    "ag_news_subset": ("ag_news_subset", "summarization", ("sh0416/ag_news", None, "train"), False),
    "anli_r1": ("anli", "nli", ("facebook/anli", "plain_text", "train_r1"), True),
    "anli_r2": ("anli", "nli", ("facebook/anli", "plain_text", "train_r2"), True),
    "anli_r3": ("anli", "nli", ("facebook/anli", "plain_text", "train_r3"), True),
    "arc_challenge": ("arc", "closed_book_qa", ("allenai/ai2_arc", "ARC-Challenge", "train"), True),
    "arc_easy": ("arc", "closed_book_qa", ("allenai/ai2_arc", "ARC-Easy", "train"), True),
    "bool_q": ("bool_q", "reading_comprehension", ("aps/super_glue", "boolq", "train"), True),
    "cb": ("cb", "nli", ("aps/super_glue", "cb", "train"), True),
    "cnn_dailymail": ("cnn_dailymail", "summarization", ("abisee/cnn_dailymail", "3.0.0", "train"), True),
    "cola": ("cola", "misc", ("nyu-mll/glue", "cola", "train"), True),
    "common_gen": ("common_gen", "struct_to_text", ("allenai/common_gen", None, "train"), True),
    "copa": ("copa", "commonsense", ("aps/super_glue", "copa", "train"), True),
    "coqa": ("coqa", "misc", ("stanfordnlp/coqa", None, "train"), True),
    "cosmos_qa": ("cosmos_qa", "reading_comprehension_with_commonsense", ("allenai/cosmos_qa", None, "train"), True),
    "dart": ("dart", "struct_to_text", ("GEM/dart", None, "train"), False),
    "definite_pronoun_resolution": ("definite_pronoun_resolution", "coreference",
                                    ("community-datasets/definite_pronoun_resolution", "plain_text", "train"), True),
    "drop": ("drop", "reading_comprehension", ("ucinlp/drop", None, "train"), True),
    "e2e_nlg": ("e2e_nlg", "struct_to_text", ("tuetschek/e2e_nlg_cleaned", None, "train"), True),
    "fix_punct": ("fix_punct", "misc", ("ParaCrawl/para_crawl", "enda", "train"), True),
    "gigaword": ("gigaword", "summarization", ("Harvard/gigaword", None, "train"), True),
    "glue_mrpc": ("glue_mrpc", "paraphrase", ("nyu-mll/glue", "mrpc", "train"), True),
    "glue_qqp": ("glue_qqp", "paraphrase", ("nyu-mll/glue", "qqp", "train"), True),
    "hellaswag": ("hellaswag", "commonsense", ("Rowan/hellaswag", None, "train"), True),
    "imdb_reviews": ("imdb_reviews", "sentiment", ("stanfordnlp/imdb", "plain_text", "train"), True),
    "lambada": ("lambada", "misc", ("cimec/lambada", "plain_text", "validation"), True),
    "math_dataset": ("math_dataset", "misc", ("deepmind/math_dataset", "algebra__linear_1d", "train"), False),
    "mnli": ("mnli", "nli", ("nyu-mll/glue", "mnli", "train"), True),
    "multi_news": ("multi_news", "summarization", ("alexfabbri/multi_news", None, "train"), True),
    "multirc": ("multirc", "reading_comprehension", ("aps/super_glue", "multirc", "train"), True),
    "natural_questions": ("natural_questions", "closed_book_qa",
                          ("google-research-datasets/nq_open", "nq_open", "train"), True),
    "newsroom": ("newsroom", "summarization", ("lil-lab/newsroom", None, "train"), True),
    "openbookqa": ("openbookqa", "reading_comprehension", ("allenai/openbookqa", "additional", "train"), True),
    "opinion_abstracts_idebate": ("opinion_abstracts_idebate", "summarization",
                                  ("opinion_abstracts", "idebate", "train"), False),
    "opinion_abstracts_rotten_tomatoes": ("opinion_abstracts_rotten_tomatoes", "summarization",
                                          ("opinion_abstracts", "rotten_tomatoes", "train"), False),
    "para_crawl_enes": ("para_crawl", "translation", ("ParaCrawl/para_crawl", "enes", "train"), True),
}


@pytest.fixture(scope="module")
def tables(shared_data):
    return read_flan_tables(shared_data / "templates" / "flan")


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    return Resolver()  # the bundled registry: the catalog specs and the shipped templates/flan sets


def fixture_rows(name: str) -> list[Row]:
    hub, config, split = CATALOG[name][2]
    path = FIXTURES / hub.replace("/", "__") / (config or "default") / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def kept_rows(name: str) -> list[Row]:
    keep = KEEP.get(name, lambda r: True)
    return [r for r in fixture_rows(name) if keep(r)]


def render(resolver: Resolver, name: str, variant: str, k: int, row: Row, **extra) -> tuple[str, str]:
    out = render_request({"templates": name, "variant": variant, "template": k, "row": row, **extra}, resolver)
    return out.inputs, out.targets


def with_options(features: Features, shown: bool) -> Features:
    """FLAN's deterministic options block (format_options), for templates that show `{options_}`."""
    block = "OPTIONS:\n- " + "\n- ".join(features["options"]) if shown and "options" in features else ""
    return {**features, "options_": block}


# ------------------------------------------------------------------------------------------------------- catalog

def test_part_a_catalog_is_the_36_tasks_with_flans_keys_clusters_and_sources():
    assert len(CATALOG) == len(REFERENCES) == 36
    for name, (key, cluster, (hub, config, split), verified) in CATALOG.items():
        spec = load_task_file(SPECS / f"{name}.yaml").spec
        assert spec.name == name and spec.collection == "Flan2021"
        assert spec.cluster == cluster and spec.templates == f"flan/{flan_key_slug(key)}"
        assert (spec.source.hub, spec.source.config, spec.source.split_name) == (hub, config, split)
        assert spec.verified is verified, name
        rows = fixture_rows(name)
        assert 3 <= len(rows) <= 8 and kept_rows(name), name
        assert all(set(row) == set(rows[0]) for row in rows), f"{name}: fixture rows differ in their columns"


@pytest.mark.parametrize("name", sorted(KEEP))
def test_filters_keep_the_rows_flan_keeps(name):
    spec = load_task_file(SPECS / f"{name}.yaml").spec
    keep = compile_filter(spec.filter)
    rows = fixture_rows(name)
    assert [bool(keep(r)) for r in rows] == [KEEP[name](r) for r in rows]
    if name != "fix_punct":  # its ParaCrawl en-da fixture is shared with true_case; the corner cases below drop rows
        assert not all(KEEP[name](r) for r in rows), f"{name}: the fixture should hold a row FLAN drops"


def test_filters_follow_re2_on_corner_cases():
    fix = compile_filter(load_task_file(SPECS / "fix_punct.yaml").spec.filter)
    for text in ("no punctuation here", "tab\tand_underscore 42", "Ærø", "naïve", "a\vb", "x.", "café"):
        row = {"translation": {"en": text, "da": ""}}
        assert bool(fix(row)) == (no_punct(text) != text), text
    giga = compile_filter(load_task_file(SPECS / "gigaword.yaml").spec.filter)
    for document, summary in (("UNK said", "x"), ("a", "b#"), ("a\nUNK", "b"), ("#\n", "x"), ("UN", "K"), ("ok", "ok")):
        row = {"document": document, "summary": summary}
        assert bool(giga(row)) == gigaword_keep(row), (document, summary)


# ------------------------------------------------------------------------------------------------------- zero-shot

@pytest.mark.parametrize("name", sorted(CATALOG))
def test_zero_shot_renders_equal_flans(name, tables, resolver):
    key = CATALOG[name][0]
    checked = 0
    for row in kept_rows(name):
        features = REFERENCES[name](row)
        for variant, table in (("zs_opt", tables.patterns), ("zs_noopt", tables.patterns_no_options)):
            reference = with_options(features, shown=variant == "zs_opt")
            for k, (inputs, targets) in enumerate(table[key]):
                want = (flan_format(inputs, reference), flan_format(targets, reference))
                assert render(resolver, name, variant, k, row) == want, (name, variant, k, row)
                checked += 1
    assert checked >= 2 * 3 * 8


def test_regex_corner_cases_of_the_field_mappings(resolver):
    """Inputs where a naive string replace would differ from FLAN's RE2 regexes."""
    task = resolver.resolve("hellaswag")
    for ctx in ("[header] a [b]\tc [d]x [e] f", "[header]x [a\n b] c", "x [a [b] c] d", "[header]\n[header] y",
                "[hea[header] der] z", "ends with [x] ", "[unclosed", "]] [] [ ] ["):
        row = {"ctx": ctx, "endings": ["[a] b", "c [d]\n", "[e]x", "f"], "label": "1"}
        context = task.context(Example("corner", row))
        want = hellaswag(row)
        assert context["context"] == want["context"], ctx
        assert context["options"] == want["options"] and context["answer"] == want["answer"]
    dart_task = resolver.resolve("dart")
    for triples in ([["[A]", "b [c", "d] e"]], [["x", "[y]", "z"], ["]a", "[b", "c]"]], [["no", "brackets", "here"]]):
        row = {"tripleset": triples, "target": "t"}
        context = dart_task.context(Example("corner", row))
        assert context["tripleset"] == dart(row)["tripleset"], triples
        assert context["tripleset_newline"] == dart(row)["tripleset_newline"]


# ------------------------------------------------------------------------------------------------------- few-shot



@pytest.mark.parametrize("name", ["anli_r1", "hellaswag", "cosmos_qa", "coqa", "dart", "opinion_abstracts_idebate"])
@pytest.mark.parametrize("variant", ["fs_opt", "fs_noopt"])
def test_x_shot_renders_equal_flans(name, variant, tables, resolver):
    key = CATALOG[name][0]
    table = tables.fewshot_patterns if variant == "fs_opt" else tables.fewshot_patterns_no_options
    rows = kept_rows(name)
    for k in (0, 1, 2):
        row, shots = rows[k % len(rows)], [rows[(k + 1) % len(rows)], rows[(k + 2) % len(rows)]]
        ref = [with_options(REFERENCES[name](r), shown=variant == "fs_opt") for r in (row, *shots)]
        pattern = table[key][k]
        want = flan_fewshot(pattern, ref[0], [(pattern, r) for r in ref[1:]])
        assert render(resolver, name, variant, k, row, exemplars=shots) == want, (name, variant, k)


@pytest.mark.parametrize("name", ["mnli", "arc_easy", "openbookqa", "bool_q"])
def test_template_mix_renders_equal_flans(name, tables, resolver):
    key = CATALOG[name][0]
    patterns = tables.fewshot_patterns[key]
    in_mix = [k for k, p in enumerate(patterns) if p.in_template_mix]
    rows = kept_rows(name)
    row, shots = rows[0], rows[1:3]
    chosen, separator = [in_mix[-1], in_mix[1]], "\n\n"
    ref = [with_options(REFERENCES[name](r), shown=True) for r in (row, *shots)]
    want = flan_fewshot(patterns[in_mix[0]], ref[0], [(patterns[i], r) for i, r in zip(chosen, ref[1:])], separator)
    got = render(resolver, name, "fs_opt", in_mix[0], row, exemplars=shots, fewshot_mode="template_mix",
                 exemplar_templates=chosen, separator=separator)
    assert got == want


# ------------------------------------------------------------------------------------------------- hub mirror

# FLAN's fix_punct trains on ParaCrawl en-da rows 30,200-60,200 (task_configs_v1.py); the fixture's _info.json gives
# each of its rows a position in the split (true_case and word_segment read the other ones).
FLAN_TRAIN_ROWS = {"fix_punct": range(30200, 60200)}


def in_train_slice(name: str, rows: list[Row]) -> list[Row]:
    hub, config, split = CATALOG[name][2]
    info = FIXTURES / hub.replace("/", "__") / (config or "default") / "_info.json"
    if name not in FLAN_TRAIN_ROWS or not info.is_file():
        return rows
    positions = json.loads(info.read_text())["splits"][split]["positions"]
    return [r for p, r in zip(positions, fixture_rows(name)) if p in FLAN_TRAIN_ROWS[name] and r in rows]


def test_every_task_reads_its_fixture_rows_through_the_hub_mirror(resolver):
    from flanmix.hub import using_mirror

    with using_mirror([FIXTURES]):
        for name in CATALOG:
            task = resolver.resolve(name)
            rows = [e.raw for split in ("train", "validation") for e in task.examples(split)]
            want = in_train_slice(name, kept_rows(name))
            assert sorted(map(json.dumps, rows)) == sorted(map(json.dumps, want)), name
