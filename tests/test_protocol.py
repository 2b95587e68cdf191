"""The analysis protocol (data/protocol.yaml) loads, validates, and names models the zoo plan builds."""
import copy

import pytest
import yaml

from eeutils.analysis.protocol import ProtocolError, load_protocol, parse_protocol
from eeutils.core.resources import data_path
from eeutils.core.spec import parse_model_spec
from eeutils.zoo.recipes import RECIPES


def _raw():
    return yaml.safe_load(data_path("protocol.yaml").read_text())


def test_shipped_protocol_loads_with_primary_first():
    p = load_protocol()
    assert p.primary == {"similarity": "top1", "value": "normalised", "alpha": 0.5}
    variants = p.variants()
    assert variants[0] == p.primary and len(variants) == 18 and len({tuple(v.values()) for v in variants}) == 18
    assert {c.notebook for c in p.claims.values()} == {"04", "05", "06", "07", "08", "09", "12"}
    assert p.claim("training_dynamics").segment == {"min_step": 1}
    # version 2: t intervals, three seeds, the tuned lens as the declared secondary analysis
    assert p.version == 2 and p.defaults["interval"] == "doc-bootstrap+seed-t" and p.defaults["min_seeds"] == 3
    assert p.lenses == ["logit", "tuned"]
    for c in p.claims.values():  # every side that can reach a verdict lists three seeds
        if c.kind in ("difference", "matched_loss") and not c.borrow_seed_spread and c.key != "scale_large_vs_mid_matched_loss":
            assert len(c.a) == 3 and len(c.b) == 3, c.key
    # one headline comparison per paper claim (or a single comparison)
    by_claim = {}
    for c in p.claims.values():
        by_claim.setdefault(c.claim, []).append(c)
    for claim, cs in by_claim.items():
        assert len(cs) == 1 or sum(bool(c.headline) for c in cs) == 1, claim


def test_every_protocol_model_is_in_the_zoo_plan():
    p = load_protocol()
    for c in p.claims.values():
        for spec in c.a + c.b + c.runs + tuple(m for pair in c.borrow_seed_spread.values() for m in pair):
            name, rev = parse_model_spec(spec)
            recipe = RECIPES[name.removeprefix("zoo/")]
            if rev is not None:
                assert int(rev.split("-")[1]) in (*recipe.checkpoints, recipe.steps), spec


@pytest.mark.parametrize("edit, match", [
    (lambda r: r["defaults"].update(similarity="cosine"), "defaults.similarity"),
    (lambda r: r["defaults"].update(ci=1.0), "defaults.ci"),
    (lambda r: r["defaults"].update(n_boot=0), "defaults.n_boot"),
    (lambda r: r["defaults"]["variants"].update(alpha=[0.25]), "primary"),
    (lambda r: r["defaults"].pop("min_effect"), "missing"),
    (lambda r: r["claims"]["dense_vs_moe"].pop("b"), "both sides"),
    (lambda r: r["claims"]["dense_vs_moe"].update(kind="vibes"), "kind"),
    (lambda r: r["claims"]["generations_matched_loss"].update(match="c"), "match"),
    (lambda r: r["claims"]["dense_vs_moe"].update(typo=1), "unknown"),
    (lambda r: r["claims"]["generations_quarter_tokens"].update(borrow_seed_spread={"zoo/x": ["a", "b"]}),
     "borrow"),
])
def test_malformed_protocol_is_refused_with_the_key(edit, match):
    raw = copy.deepcopy(_raw())
    edit(raw)
    with pytest.raises(ProtocolError, match=match):
        parse_protocol(raw)
