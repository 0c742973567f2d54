"""Offline tasks built from the quickstart's Python-standard-library corpus (family "embedded").

- ``embedded/code_search``: docstring -> function body retrieval among every documented function of the
  held-out documents, nDCG@10. Both the checkpoint and any model it is compared with first get the same short
  contrastive fine-tune (in-batch negatives) on docstring/body pairs of training documents: zero-shot
  mean-pooled embeddings of a random model keep much lexical-overlap signal, which would blur the comparison.
  The zero-shot score and a TF-IDF score are reported beside it.
- ``embedded/word_order``: minimal pairs (a held-out code window, and the same words of each line in another
  order), decided zero-shot by the checkpoint's MLM pseudo-log-likelihood (``word_order.py``). A bag-of-words
  scorer is at chance by construction.

Evaluation examples come from the held-out split (``val.jsonl``), fine-tuning examples from ``train.jsonl``.
Code search's examples do not depend on the run seed (it fixes the fine-tune's example order); word order's
seed picks the windows and their shuffles.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

from . import corpus as C
from .base import RunArgs, TaskSpec
from .ranking import rank_of_positive, ranking_metrics
from .word_order import WordOrderSettings, run_word_order

_DATA_SEED = 1234
"""Fixes which examples are sampled and which snippets are shuffled; independent of the run seed."""


@dataclass(frozen=True)
class CodeSearchSettings:
    lr: float = 1e-3
    """Fine-tuning learning rate (AdamW, 10% warmup, linear decay)."""
    steps: int = 200
    """Contrastive fine-tuning steps (about one pass over the quickstart's ~5,600 pairs). Measured on the
    quickstart corpus (docs/evaluation.md): with 48 steps on 1,500 pairs a phase-1 model at 9.8M tokens only
    tied random init (0.276 vs 0.265); with 200 steps on every pair it won (0.407 vs 0.345)."""
    batch_size: int = 32
    """Pairs per step; each query's negatives are the other 31 bodies."""
    scale: float = 20.0
    """Similarity scale (inverse temperature) of the in-batch softmax."""
    max_len_query: int = 48
    """Docstring tokens kept."""
    max_len_code: int = 128
    """Function tokens kept (signature first)."""
    train_pairs: int = 8192
    """Cap on fine-tuning pairs (documented functions of the training documents; the quickstart's have
    about 5,600)."""
    eval_queries: int = 500
    """Cap on held-out queries (the quickstart's split has about 150)."""


# ----------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=4)
def _function_data(folder: str, stamp: tuple) -> tuple[list[C.FunctionPair], list[C.FunctionPair]]:
    train_docs = list(C.read_code(Path(folder) / "train.jsonl"))
    train = C.function_pairs(train_docs)
    held_out = C.unseen(C.function_pairs(C.read_code(Path(folder) / "val.jsonl")),
                        (text for _, text in train_docs), train)
    return train, held_out


def _stamp(folder: Path) -> tuple:
    return tuple((name, (folder / name).stat().st_mtime_ns, (folder / name).stat().st_size) for name in C.SPLITS)


def code_search_data(data_dir: str | None, s: CodeSearchSettings):
    """(train pairs, held-out pairs) as the task uses them."""
    folder = C.locate_corpus(data_dir)
    train, held_out = _function_data(str(folder), _stamp(folder))
    if len(held_out) < 20:
        raise C.TaskError(f"{folder}/val.jsonl: only {len(held_out)} documented functions in the held-out code "
                          "documents; code search needs at least 20 (a larger corpus)")
    return C.sample(train, s.train_pairs, _DATA_SEED), C.sample(held_out, s.eval_queries, _DATA_SEED)


# ----------------------------------------------------------------------------- baselines without a model
def tfidf_ranks(queries: list[str], docs: list[str]) -> list[int]:
    """Rank of each query's own document under TF-IDF cosine similarity (identifiers split into words)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(token_pattern=r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|\d+", lowercase=True, sublinear_tf=True)
    vec.fit(docs + queries)
    sims = (vec.transform(queries) @ vec.transform(docs).T).toarray()
    return [rank_of_positive(row, i) for i, row in enumerate(sims)]


# ----------------------------------------------------------------------------- runs
def run_code_search(args: RunArgs, s: CodeSearchSettings) -> dict[str, float]:
    from . import encoder as E

    train, held_out = code_search_data(args.data_dir, s)
    queries, docs = [p.docstring for p in held_out], [p.code for p in held_out]
    E.seed_all(args.seed)
    tokenizer, model = E.load_encoder(args.model_dir, args.device)

    def score() -> dict[str, float]:
        q = E.embed(model, tokenizer, queries, max_len=s.max_len_query, batch_size=64, device=args.device)
        d = E.embed(model, tokenizer, docs, max_len=s.max_len_code, batch_size=64, device=args.device)
        sims = (q @ d.T).tolist()  # (queries, documents) cosine similarities
        return ranking_metrics([rank_of_positive(row, i) for i, row in enumerate(sims)])

    zero_shot = score()
    E.contrastive_finetune(model, tokenizer, [p.docstring for p in train], [p.code for p in train],
                           steps=s.steps, batch_size=s.batch_size, lr=s.lr, scale=s.scale,
                           max_len_query=s.max_len_query, max_len_doc=s.max_len_code, seed=args.seed,
                           device=args.device)
    out = score()
    out["zero_shot_ndcg@10"] = zero_shot["ndcg@10"]
    out["tfidf_ndcg@10"] = ranking_metrics(tfidf_ranks(queries, docs))["ndcg@10"]
    out.update(queries=float(len(queries)), train_pairs=float(len(train)))
    return out


def embedded_tasks(code_search: CodeSearchSettings | None = None,
                   word_order: WordOrderSettings | None = None) -> list[TaskSpec]:
    cs, wo = code_search or CodeSearchSettings(), word_order or WordOrderSettings()
    return [
        TaskSpec(name="embedded/code_search", family="embedded", metric="ndcg@10",
                 run=functools.partial(_run_with, run_code_search, cs), grid=(_hparams(cs),),
                 reference="tfidf_ndcg@10"),
        TaskSpec(name="embedded/word_order", family="embedded", metric="accuracy",
                 run=functools.partial(_run_with, run_word_order, wo), grid=(_hparams(wo),),
                 reference="bow_accuracy"),
    ]


def _hparams(settings) -> dict:
    return {k: v for k, v in asdict(settings).items() if k in ("lr", "steps", "batch_size")}


def _run_with(fn, settings, args: RunArgs) -> dict[str, float]:
    """The grid point's lr/steps/batch_size override the settings (so a grid over them works)."""
    from dataclasses import replace

    return fn(args, replace(settings, **args.hparams))
