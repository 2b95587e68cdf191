"""Every shipped zoo model loads by name, offline, and its lens reproduces its logits."""
import numpy as np
import pytest
import torch

import eeutils
from eeutils import zoo

NAMES = zoo.list_zoo()


def test_zoo_is_shipped():
    for name in ("dense-small", "dense-mid", "dense-large", "gpt2-mid", "moe-mid", "ssm-mid", "dense-mid-tuned",
                 "dense-mid-s1", "moe-mid-s1", "ssm-mid-s1"):
        assert name in NAMES, f"zoo model {name} missing: run `make zoo`"
    assert len(zoo.list_revisions("dense-mid")) >= 4
    assert "step-0" in zoo.list_revisions("dense-mid")


@pytest.mark.parametrize("name", NAMES)
def test_load_and_readout(name):
    lm = eeutils.load_model(f"zoo/{name}")
    assert lm.tokenizer is not None
    ids = lm.encode("And the earth was without form, and void.")
    assert ids[0] == lm.tokenizer.bos_token_id
    assert eeutils.check_last_layer(lm, ids) <= 1e-4
    r = eeutils.readout(lm, ["In the beginning God created the heaven and the earth.", "Return the sum of a and b."],
                        progress=False)
    assert r.n_layers == lm.n_layers and r.meta["model"] == f"zoo/{name}"
    # the last readout layer against an independent forward pass of the model on the same tokens
    for d in np.unique(r.doc):
        rows = np.flatnonzero(r.doc == d)[np.argsort(r.position[r.doc == d])]
        with torch.no_grad():
            logits = lm.model(torch.tensor(r.token[rows])[None]).logits[0].float()
        assert (r["top1"][rows, -1] == logits.argmax(-1).numpy()).all()
        ce = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(r.target[rows][:-1]), reduction="none")
        assert np.allclose(r["ce"][rows[:-1], -1], ce.numpy(), atol=1e-3)
    assert np.isfinite(r["kl_to_final"]).all()


def test_checkpoint_revisions_load():
    revs = zoo.list_revisions("dense-mid")
    first = eeutils.load_model("zoo/dense-mid", revision=revs[0])
    last = eeutils.load_model("zoo/dense-mid")
    text = "And God saw the light, that it was good."
    r0 = eeutils.readout(first, text, progress=False)
    r1 = eeutils.readout(last, text, progress=False)
    # training lowers the loss on held-out-like text
    assert np.nanmean(r1["ce"][:, -1]) < np.nanmean(r0["ce"][:, -1])
    with pytest.raises(Exception, match="step-"):
        eeutils.load_model("zoo/dense-mid", revision="step-999999")


def test_unknown_zoo_name_lists_models():
    with pytest.raises(Exception, match="dense-mid"):
        eeutils.load_model("zoo/not-a-model")


def test_trained_models_agree_more_with_depth():
    """Logit-lens agreement with the final layer rises with depth (first block vs last-but-one)."""
    wl = eeutils.workloads.get_workload("zoo-prose", n_docs=8)
    for name in ("dense-mid", "moe-mid", "ssm-mid"):
        r = eeutils.readout(eeutils.load_model(f"zoo/{name}"), wl, progress=False)
        agree = (r["top1"] == r.final_top1[:, None]).mean(0)
        assert agree[r.n_layers - 1] > agree[1], (name, agree)
