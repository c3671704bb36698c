"""Golden tests for the Flan 2021 catalog, part b (paws_wiki … yelp_polarity_reviews: 35 of the 71 tasks).

For every task, each fixture row of `tests/fixtures/hub` (made-up rows in the hub dataset's own schema) renders
through the catalog spec + the shipped FLAN templates exactly as FLAN renders that row. The reference is written
here, independently of the specs' Jinja: the hub row is first turned into the TFDS row FLAN read (the schema
differences the specs handle: label orders, split columns, per-dialogue rows, …), then FLAN's own preprocessing
(`flan/v2/task_configs_v1.py`, `task_configs.py`, `preprocessors.py`, T5's `_wsc_inputs`) runs as plain Python,
then FLAN's substitution (a regex split on `({\\w*})`). Zero-shot: every template of both variants; few-shot:
FLAN's assembly formula for a few tasks.
"""

from __future__ import annotations

import json
import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from flan_reference import ASCII_WS, flan_fewshot, flan_format, options_block

from flanmix.fewshot import flan_prompt
from flanmix.importers.flan_source import flan_key_slug, read_flan_tables
from flanmix.registry import load_task_file
from flanmix.task import Example

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "task_registry" / "flan" / "flan2021"
FIXTURES = REPO / "tests" / "fixtures" / "hub"
CLUSTERS = {"nli", "reading_comprehension", "closed_book_qa", "commonsense", "coreference", "sentiment",
            "paraphrase", "struct_to_text", "translation", "summarization", "reading_comprehension_with_commonsense",
            "misc"}


def pick(options: list[str], label: int) -> str:
    """FLAN's `tf.boolean_mask(options, tf.one_hot(label, n))[0]`."""
    return options[label]


# ------------------------------------------------------------------------------------- hub row -> TFDS row
TREC_HUB = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]  # CogComp/trec coarse_label names, in id order
TREC_TFDS = ["DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC"]  # TFDS trec label-coarse names, in id order


def float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def tfds_record(x: dict) -> dict:  # TFDS's loader keeps sorted sets of entity and answer texts
    return {**x, "entities": sorted(set(x["entities"])), "answers": sorted(set(x["answers"]))}


def tfds_quac(x: dict) -> dict:  # one question row (the spec's `explode` of a hub dialogue) -> the TFDS row
    return {"title": x["wikipedia_page_title"], "background": x["background"], "context": x["context"],
            "question": x["questions"], "orig_answer": {"text": x["orig_answers"]["texts"]}}


def quac_questions(x: dict) -> list[dict]:
    """A hub QuAC dialogue as TFDS's rows, one per question: item k of each per-turn column, the rest kept."""
    turns = ("turn_ids", "questions", "followups", "yesnos")
    return [{**x, **{c: x[c][k] for c in turns},
             "answers": {key: value[k] for key, value in x["answers"].items()},
             "orig_answers": {key: value[k] for key, value in x["orig_answers"].items()}}
            for k in range(len(x["questions"]))]


# FLAN's disjoint train slices of ParaCrawl en-da (task_configs_v1.py: 30,000 train and 200 validation rows each);
# the fixture's _info.json places its rows at positions inside them.
FLAN_TRAIN_ROWS = {"true_case": range(0, 30000), "word_segment": range(60400, 90400)}


def tfds_story_cloze(x: dict) -> dict:
    return {"context": " ".join(x[f"input_sentence_{i}"] for i in range(1, 5)),
            "endings": [x["sentence_quiz1"], x["sentence_quiz2"]], "label": x["answer_right_ending"]}


def en_side(x: dict) -> dict:  # TFDS para_crawl/enda: {en, da}
    return dict(x["translation"])


# ------------------------------------------------------------------------------------- FLAN's preprocessing
def wsc_inputs(x: dict) -> str:
    """T5's `_wsc_inputs`."""
    if x["text"] == ('The boy continued to whip the pony , and eventually the pony threw him over. John laughed '
                     'out quite loud. "Good for him," he said. '):
        return ('The boy continued to whip the pony , and eventually the pony threw him over. John laughed out '
                'quite loud. "Good for X ," he said.')
    if x["text"] == ("When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the magic "
                     "pebble in an iron safe . Some day they might want to use it , but really for now, what more "
                     "could they wish for?"):
        return ("When they had eventually calmed down a bit , and had gotten home, Mr. Farley put the magic pebble "
                "in an iron safe . Some day they might want to use X , but really for now, what more could they "
                "wish for?")
    words = x["text"].split(" ")
    i = x["span2_index"]
    return " ".join([" ".join(words[:i]), "X", " ".join(words[i + 1:])])


def wsc(x: dict) -> dict:
    options = ["no", "yes"]
    context = re.sub(" X ", lambda _: " *" + x["span2_text"] + "* ", wsc_inputs(x))
    return {"context": context, "text1": x["span1_text"], "text2": x["span2_text"], "options": options,
            "answer": pick(options, x["label"])}


def record(x: dict) -> dict:
    left, right = x["query"].split("@placeholder")[0].strip(ASCII_WS), x["query"].split("@placeholder")[1]
    options = [e + right for e in x["entities"]]
    answers = [a + right for a in x["answers"]]
    return {"answer": answers[0], "passage": x["passage"].split("\n@highlight")[0], "query": left,
            "options_str": "OPTIONS:\n- " + "\n- ".join(options)}


def quac(x: dict) -> dict:
    def clean(s: str) -> str:
        return re.sub("CANNOTANSWER", "", s).strip(ASCII_WS)
    return {"title": clean(x["title"]), "background": clean(x["background"]), "context": clean(x["context"]),
            "question": clean(x["question"]), "answer": clean(x["orig_answer"]["text"])}


def unified_qa_science_inst(x: dict) -> dict | None:
    if "(D)" not in x["input"] or "(E)" in x["input"]:  # filter_unified_qa_science_inst
        return None
    text, out = re.sub(r"\\n", "\n", x["input"]), re.sub(r"\\n", "\n", x["output"])
    options = [text.split("(A)")[1].split("(B)")[0], text.split("(B)")[1].split("(C)")[0],
               text.split("(C)")[1].split("(D)")[0], text.split("(D)")[1]]
    return {"question": text.split("(A)")[0].strip(ASCII_WS), "options": [o.strip(ASCII_WS) for o in options],
            "answer": out}


def true_case(x: dict) -> dict | None:
    lower = "".join(c.lower() if "A" <= c <= "Z" else c for c in x["en"])  # tf.strings.lower: ASCII only
    return None if lower == x["en"] else {"lower": lower, "answer": x["en"]}


def wmt(code: str, language: str) -> Callable[[dict], dict]:
    def process(x: dict) -> dict:
        pair = x["translation"]  # TFDS wmt*_translate rows are {xx, en}
        return {"lang1": "English", "lang2": language, "sent1": pair["en"], "sent2": pair[code]}
    return process


def two_way(key1: str, key2: str, options: list[str]) -> Callable[[dict], dict]:
    """The GLUE/SuperGLUE/PAWS processors: two text fields, fixed options, answer by label."""
    return lambda x: {key1: x[key1], key2: x[key2], "options": options, "answer": pick(options, x["label"])}


@dataclass(frozen=True)
class Ref:
    key: str  # FLAN's template key
    process: Callable[[dict], dict | None]  # TFDS row -> FLAN features (None: FLAN's filter drops the row)
    format_options: bool  # FLAN runs `format_options` (an options_ block)
    hub: str  # fixture file, relative to tests/fixtures/hub
    to_tfds: Callable[[dict], dict | None] = lambda x: x  # hub row -> the TFDS row (None: not in FLAN's data)


def _sentiment(x: dict, field: str, options=("negative", "positive")) -> dict:
    return {field: x[field], "options": list(options), "answer": pick(list(options), x["label"])}


REFS: dict[str, Ref] = {
    "paws_wiki": Ref("paws_wiki", two_way("sentence1", "sentence2", ["no", "yes"]), True,
                     "google-research-datasets__paws/labeled_final/train",
                     lambda x: x if x["label"] in (0, 1) else None),
    "piqa": Ref("piqa", lambda x: {"goal": x["goal"], "options": [x["sol1"], x["sol2"]],
                                   "answer": pick([x["sol1"], x["sol2"]], x["label"])}, True,
                "ybisk__piqa/plain_text/train"),
    "qnli": Ref("qnli", two_way("question", "sentence", ["yes", "no"]), True, "nyu-mll__glue/qnli/train"),
    "quac": Ref("quac", quac, False, "allenai__quac/plain_text/train", tfds_quac),
    "record": Ref("record", record, False, "aps__super_glue/record/train", tfds_record),
    "rte": Ref("rte", two_way("premise", "hypothesis", ["yes", "no"]), True, "aps__super_glue/rte/train"),
    "samsum": Ref("samsum", lambda x: {"summary": x["summary"], "dialogue": re.sub(
        "<.*>", " ", re.sub("\r\n", "\n", x["dialogue"]))}, False, "Samsung__samsum/samsum/train"),
    "sentiment140": Ref("sentiment140", lambda x: {"text": x["text"], "options": ["negative", "positive"],
                                                   "answer": "positive" if x["polarity"] in (3, 4) else "negative"},
                        True, "stanfordnlp__sentiment140/sentiment140/train",
                        lambda x: {"text": x["text"], "polarity": x["sentiment"]}),
    "snli": Ref("snli", lambda x: None if x["label"] not in (0, 1, 2) else two_way(
        "premise", "hypothesis", ["yes", "it is not possible to tell", "no"])(x), True,
                "stanfordnlp__snli/plain_text/train"),
    "squad_v1": Ref("squad_v1", lambda x: {"title": re.sub("_", " ", x["title"]), "context": x["context"],
                                           "question": x["question"], "answer": x["answers"]["text"][0]}, False,
                    "rajpurkar__squad/plain_text/train"),
    "squad_v2": Ref("squad_v2", lambda x: {
        "title": re.sub("_", " ", x["title"]), "context": x["context"], "question": x["question"],
        "answer": "unanswerable" if x["is_impossible"] else x["answers"]["text"][0]}, False,
        "rajpurkar__squad_v2/squad_v2/train", lambda x: {**x, "is_impossible": not x["answers"]["text"]}),
    "sst2": Ref("sst2", lambda x: _sentiment(x, "sentence"), True, "nyu-mll__glue/sst2/train"),
    "story_cloze": Ref("story_cloze", lambda x: {"context": x["context"], "options": x["endings"],
                                                 "answer": pick(x["endings"], x["label"] - 1)}, True,
                       "LSDSem__story_cloze/2016/validation", tfds_story_cloze),
    "stsb": Ref("stsb", lambda x: {"sentence1": x["sentence1"], "sentence2": x["sentence2"],
                                   "options": ["0", "1", "2", "3", "4", "5"], "answer": f"{x['label']:.0f}"},
                True, "nyu-mll__glue/stsb/train", lambda x: {**x, "label": float32(x["label"])}),
    "trec": Ref("trec", lambda x: {"text": x["text"], "options": (o := [
        "description", "entity", "abbreviation", "human", "numeric", "location"]), "answer": pick(
        o, x["label-coarse"])}, True, "CogComp__trec/default/train",
                lambda x: {"text": x["text"], "label-coarse": TREC_TFDS.index(TREC_HUB[x["coarse_label"]])}),
    "trivia_qa": Ref("trivia_qa", lambda x: {"question": x["question"], "answer": x["answer"]["normalized_value"]},
                     False, "mandarjoshi__trivia_qa/rc.nocontext/train"),
    "trivia_qa_wiki_missing": Ref("trivia_qa", lambda x: {"question": x["question"],
                                                          "answer": x["answer"]["normalized_value"]},
                                  False, "mandarjoshi__trivia_qa/unfiltered.nocontext/train"),
    "true_case": Ref("true_case", true_case, False, "ParaCrawl__para_crawl/enda/train", en_side),
    "unified_qa_science_inst": Ref("unified_qa_science_inst", unified_qa_science_inst, True,
                                   "allenai__unifiedqa/ai2_science_middle/train"),
    "web_nlg_en": Ref("web_nlg_en", lambda x: {"target": x["target"], "input_string": re.sub(
        r" \| ", ", ", re.sub("_", " ", "; ".join(x["input"])))}, False, "GEM__gem/web_nlg_en/train"),
    "wic": Ref("wic", lambda x: {**two_way("sentence1", "sentence2", ["different meanings", "the same meaning"])(x),
                                 "word": x["word"]}, True, "aps__super_glue/wic/train"),
    "wiki_lingua_english_en": Ref("wiki_lingua_english_en", lambda x: {"source": x["source"],
                                                                       "target": x["target"]},
                                  False, "GEM__gem/wiki_lingua_english_en/train"),
    "winogrande": Ref("winogrande", lambda x: {"context": x["sentence"].split("_")[0], "options": (o := [
        x["option1"] + x["sentence"].split("_")[1], x["option2"] + x["sentence"].split("_")[1]]),
        "answer": pick(o, x["label"])}, True, "allenai__winogrande/winogrande_xl/train",
        lambda x: {**x, "label": ["1", "2"].index(x["answer"])}),
    "wmt14_enfr": Ref("wmt14_enfr", wmt("fr", "French"), False, "wmt__wmt14/fr-en/train"),
    **{f"wmt16_translate_{code}en": Ref("wmt16_translate", wmt(code, language), False,
                                        f"wmt__wmt16/{code}-en/train")
       for code, language in [("cs", "Czech"), ("de", "German"), ("fi", "Finnish"), ("ro", "Romanian"),
                              ("ru", "Russian"), ("tr", "Turkish")]},
    "wnli": Ref("wnli", two_way("sentence1", "sentence2", ["no", "yes"]), True, "nyu-mll__glue/wnli/train"),
    "word_segment": Ref("word_segment", lambda x: {"no_space": re.sub(" ", "", x["en"]), "answer": x["en"]}, False,
                        "ParaCrawl__para_crawl/enda/train", en_side),
    "wsc": Ref("wsc", wsc, True, "aps__super_glue/wsc.fixed/train"),
    "xsum": Ref("xsum", lambda x: {"text": x["document"], "summary": x["summary"]}, False,
                "EdinburghNLP__xsum/default/train"),
    "yelp_polarity_reviews": Ref("yelp_polarity_reviews", lambda x: {
        **_sentiment(x, "text"), "text": re.sub(r"\\n", " ", re.sub(r'\\""', '"', x["text"]))}, True,
        "fancyzhx__yelp_polarity/plain_text/train"),
}

# The columns each dataset's card documents (the fixtures must use exactly these).
SCHEMAS = {
    "aps__super_glue/rte": {"premise", "hypothesis", "idx", "label"},
    "aps__super_glue/wic": {"word", "sentence1", "sentence2", "start1", "start2", "end1", "end2", "idx", "label"},
    "aps__super_glue/wsc.fixed": {"text", "span1_index", "span2_index", "span1_text", "span2_text", "idx", "label"},
    "aps__super_glue/record": {"passage", "query", "entities", "entity_spans", "answers", "idx"},
    "nyu-mll__glue/qnli": {"question", "sentence", "label", "idx"},
    "nyu-mll__glue/wnli": {"sentence1", "sentence2", "label", "idx"},
    "nyu-mll__glue/sst2": {"sentence", "label", "idx"},
    "nyu-mll__glue/stsb": {"sentence1", "sentence2", "label", "idx"},
    "stanfordnlp__snli/plain_text": {"premise", "hypothesis", "label"},
    "google-research-datasets__paws/labeled_final": {"id", "sentence1", "sentence2", "label"},
    "ybisk__piqa/plain_text": {"goal", "sol1", "sol2", "label"},
    "LSDSem__story_cloze/2016": {"story_id", "input_sentence_1", "input_sentence_2", "input_sentence_3",
                                 "input_sentence_4", "sentence_quiz1", "sentence_quiz2", "answer_right_ending"},
    "allenai__winogrande/winogrande_xl": {"sentence", "option1", "option2", "answer"},
    "stanfordnlp__sentiment140/sentiment140": {"text", "date", "user", "sentiment", "query"},
    "fancyzhx__yelp_polarity/plain_text": {"text", "label"},
    "CogComp__trec/default": {"text", "coarse_label", "fine_label"},
    "rajpurkar__squad/plain_text": {"id", "title", "context", "question", "answers"},
    "rajpurkar__squad_v2/squad_v2": {"id", "title", "context", "question", "answers"},
    "allenai__quac/plain_text": {"dialogue_id", "wikipedia_page_title", "background", "section_title", "context",
                                 "turn_ids", "questions", "followups", "yesnos", "answers", "orig_answers"},
    "mandarjoshi__trivia_qa/rc.nocontext": {"question", "question_id", "question_source", "entity_pages",
                                            "search_results", "answer"},
    "mandarjoshi__trivia_qa/unfiltered.nocontext": {"question", "question_id", "question_source", "entity_pages",
                                                    "search_results", "answer"},
    "allenai__unifiedqa/ai2_science_middle": {"input", "output"},
    "Samsung__samsum/samsum": {"id", "dialogue", "summary"},
    "EdinburghNLP__xsum/default": {"document", "summary", "id"},
    "GEM__gem/wiki_lingua_english_en": {"gem_id", "gem_parent_id", "source_aligned", "target_aligned", "source",
                                        "target", "references"},
    "GEM__gem/web_nlg_en": {"gem_id", "gem_parent_id", "input", "target", "references", "category", "webnlg_id"},
    "ParaCrawl__para_crawl/enda": {"translation"},
    "wmt__wmt14/fr-en": {"translation"},
    **{f"wmt__wmt16/{code}-en": {"translation"} for code in ("cs", "de", "fi", "ro", "ru", "tr")},
}
UNVERIFIED = {"trivia_qa_wiki_missing", "unified_qa_science_inst"}


def fixture_rows(ref: Ref) -> list[dict]:
    path = FIXTURES / f"{ref.hub}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [q for row in rows for q in quac_questions(row)] if ref.key == "quac" else rows


def in_train_slice(name: str, rows: list[dict]) -> list[dict]:
    """The fixture rows inside FLAN's train slice of the task (by their positions in the sampled split)."""
    info = FIXTURES / REFS[name].hub.rsplit("/", 1)[0] / "_info.json"
    split = REFS[name].hub.rsplit("/", 1)[1]
    positions = json.loads(info.read_text())["splits"][split]["positions"] if info.is_file() else range(len(rows))
    wanted = FLAN_TRAIN_ROWS.get(name)
    return [r for p, r in zip(positions, rows) if wanted is None or p in wanted]


def flan_features(ref: Ref, row: dict) -> dict | None:
    """What FLAN's preprocessors make of a hub row (None: not in FLAN's data)."""
    tfds_row = ref.to_tfds(row)
    features = None if tfds_row is None else ref.process(tfds_row)
    if features is not None and ref.format_options:
        features = {**features, "options_": options_block(features["options"])}
    return features


@pytest.fixture(scope="module")
def tables(shared_data):
    return read_flan_tables(shared_data / "templates" / "flan")


@pytest.fixture(scope="module")
def tasks():
    return {name: load_task_file(SPECS / f"{name}.yaml") for name in REFS}


# ------------------------------------------------------------------------------------------------- specs
def test_part_b_specs_are_these_35_flan2021_tasks_with_fixtures_in_their_schema():
    assert len(REFS) == 35
    assert {p.stem for p in SPECS.glob("*.yaml")} >= set(REFS)
    for name, ref in REFS.items():
        task = load_task_file(SPECS / f"{name}.yaml")
        spec = task.spec
        assert spec.name == name and spec.collection == "Flan2021" and spec.cluster in CLUSTERS, name
        assert spec.templates == f"flan/{flan_key_slug(ref.key)}", name
        assert spec.verified is (name not in UNVERIFIED), name
        config = spec.source.config or "default"
        assert ref.hub == f"{spec.source.hub.replace('/', '__')}/{config}/{spec.source.split_name}", name
        rows = fixture_rows(ref)
        assert 3 <= len(rows) <= 8 and all(set(r) == SCHEMAS[ref.hub.rsplit("/", 1)[0]] for r in rows), name


@pytest.mark.parametrize("name", sorted(REFS))
def test_fixture_rows_load_from_the_hub_mirror_and_the_filter_drops_what_flan_drops(name, monkeypatch):
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(FIXTURES))
    ref = REFS[name]
    task = load_task_file(SPECS / f"{name}.yaml")
    loaded = [e.raw for split in ("train", "validation") for e in task.examples(split)]
    kept = [r for r in in_train_slice(name, fixture_rows(ref)) if flan_features(ref, r) is not None]
    assert sorted(map(json.dumps, loaded)) == sorted(map(json.dumps, kept))
    assert len(task.examples("train")) >= 2  # enough for few-shot prompts


# ------------------------------------------------------------------------------------------------- zero-shot
@pytest.mark.parametrize("name", sorted(REFS))
def test_every_fixture_row_renders_as_flan_in_zero_shot(name, tables, tasks):
    """Every template of zs_opt (deterministic options) and zs_noopt, on every fixture row FLAN keeps."""
    ref, task = REFS[name], tasks[name]
    rendered = 0
    for i, row in enumerate(fixture_rows(ref)):
        features = flan_features(ref, row)
        if features is None:
            continue
        for variant, table in (("zs_opt", tables.patterns), ("zs_noopt", tables.patterns_no_options)):
            for k, (inputs, targets) in enumerate(table[ref.key]):
                got = task.render_full(Example(f"row{i}", row), template_type=variant, template_idx=k)
                assert (got.inputs, got.targets) == (flan_format(inputs, features), flan_format(targets, features)), \
                    (name, i, variant, k)
                rendered += 1
    assert rendered >= 2 * 2 * len(tables.patterns[ref.key])


def test_the_tricky_rows_really_exercise_the_preprocessing():
    """A few values the mappings must get exactly right (read from the references above)."""
    def features(name: str, index: int) -> dict:
        return flan_features(REFS[name], fixture_rows(REFS[name])[index])

    assert features("wsc", 1)["context"] == 'The trophy didn\'t fit in the suitcase because *it* was too "big" .'
    assert features("wsc", 3)["context"].endswith('"Good for *him* ," he said.')  # T5's special case
    assert features("record", 0)["options_str"].startswith('OPTIONS:\n- CNN want a second line')  # sorted
    assert features("record", 1)["answer"] == "Müller crossed the line ahead of the defending champion."  # sorted
    assert features("samsum", 1)["dialogue"] == 'Zoë: Are we still on for "café" at 5?\nMateo:  '  # greedy <.*>
    assert features("stsb", 1)["answer"] == "2" and features("stsb", 3)["answer"] == "4"  # half to even
    assert features("trec", 0)["answer"] == "location" and features("trec", 5)["answer"] == "entity"
    assert features("yelp_polarity_reviews", 1)["text"] == 'Waited 45 minutes. The manager said "we\'re busy" and ' \
                                                            "walked away."
    assert features("true_case", 3)["lower"] == "read more about Ærø and its ferries."  # ASCII letters only
    assert features("squad_v2", 1)["answer"] == "unanswerable"
    assert features("quac", 2)["context"] == "The train first ran in 1923.\nIt was rebuilt in 1997."
    assert features("quac", 1)["question"] == "Did she have siblings?"  # the dialogue's second question
    assert features("unified_qa_science_inst", 1)["options"][2] == "100 °C"
    for name, index in (("snli", 3), ("paws_wiki", 3), ("true_case", 2), ("unified_qa_science_inst", 3)):
        assert features(name, index) is None, name


# ------------------------------------------------------------------------------------------------- few-shot


FEW_SHOT_TASKS = ["rte", "record", "wsc", "samsum", "stsb", "trec", "winogrande", "wmt16_translate_deen"]


@pytest.mark.parametrize("name", FEW_SHOT_TASKS)
@pytest.mark.parametrize("variant", ["fs_opt", "fs_noopt"])
def test_few_shot_x_shot_prompts_are_flans(name, variant, tables, tasks):
    """x_shot: the row and two exemplars (fixture rows) in the row's own pattern, every pattern."""
    ref, task = REFS[name], tasks[name]
    table = tables.fewshot_patterns if variant == "fs_opt" else tables.fewshot_patterns_no_options
    rows = [r for r in fixture_rows(ref) if flan_features(ref, r) is not None]
    items = task.prompts.items(variant)
    assert len(items) == len(table[ref.key])
    for k, pattern in enumerate(table[ref.key]):
        row, shots = rows[k % len(rows)], [rows[(k + 1) % len(rows)], rows[(k + 2) % len(rows)]]
        contexts = [task.context(Example(f"r{j}", r)) for j, r in enumerate([row, *shots])]
        rng = random.Random(k)
        got = flan_prompt(task.prompts, items, k, contexts[0], [(c, k) for c in contexts[1:]],
                          make_block=task.prompts.block_maker(variant, False, rng), rng=rng)
        features = [flan_features(ref, r) for r in (row, *shots)]
        assert (got.inputs, got.targets) == flan_fewshot(pattern, features[0], [(pattern, f) for f in features[1:]]), \
            (name, variant, k)


@pytest.mark.parametrize("name", ["rte", "record", "wmt16_translate_deen"])
def test_few_shot_template_mix_prompts_are_flans(name, tables, tasks):
    """template_mix: exemplars each in its own in-mix pattern, joined by the task's separator."""
    ref, task = REFS[name], tasks[name]
    patterns = tables.fewshot_patterns[ref.key]
    in_mix = [k for k, p in enumerate(patterns) if p.in_template_mix]
    rows = [r for r in fixture_rows(ref) if flan_features(ref, r) is not None]
    items = task.prompts.items("fs_opt")
    for n, k in enumerate(in_mix):
        chosen = [in_mix[(n + j + 1) % len(in_mix)] for j in range(3)]
        separator = ("\n", "\n\n", "\n\n\n")[n % 3]
        shot_rows = [rows[(n + j + 1) % len(rows)] for j in range(3)]
        contexts = [task.context(Example(f"r{j}", r)) for j, r in enumerate([rows[n % len(rows)], *shot_rows])]
        rng = random.Random(n)
        got = flan_prompt(task.prompts, items, k, contexts[0], list(zip(contexts[1:], chosen)),
                          make_block=task.prompts.block_maker("fs_opt", False, rng), rng=rng, separator=separator)
        features = [flan_features(ref, r) for r in (rows[n % len(rows)], *shot_rows)]
        want = flan_fewshot(patterns[k], features[0], [(patterns[i], f) for i, f in zip(chosen, features[1:])],
                            separator)
        assert (got.inputs, got.targets) == want, (name, k, chosen)
