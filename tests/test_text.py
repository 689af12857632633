"""Text encoders: offline MiniLM, a T5 directory, the null context and the embedding cache."""
import pytest
import torch

from vimogen_core.text.encoders import EmbeddingCache, MiniLMEncoder, T5TextEncoder, get_text_encoder


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


def test_minilm_loads_offline_and_separates_meanings(minilm):
    tokens, mask = minilm.encode(["a person walks forward", "someone strolls ahead", "a person does a backflip"])
    assert tokens.shape[0] == 3 and tokens.shape[2] == 384 and mask.dtype == torch.bool
    assert bool((tokens[~mask] == 0).all())  # padding is zero
    pooled = torch.nn.functional.normalize((tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    assert float(pooled[0] @ pooled[1]) > float(pooled[0] @ pooled[2])
    null = minilm.null_context(226)
    assert null.shape == (226, 384) and null[0].abs().sum() > 0 and null[10:].abs().sum() == 0


def test_minilm_runs_bert_as_its_transformers_model_does(minilm):
    """The encoder's own BERT forward gives the transformers model's token states: the cached
    embeddings of the training captions stay valid for prompts encoded later."""
    texts = ["a person walks forward", "someone does a slow cartwheel to the left, then bows and waves", "jump"]
    batch = minilm.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = minilm.model(**batch).last_hidden_state
    tokens, mask = minilm.encode(texts)
    assert torch.equal(mask, batch["attention_mask"].bool())
    assert (tokens - expected * mask[..., None]).abs().max() < 1e-5


def test_empty_prompt_is_rejected(minilm, tmp_path):
    with pytest.raises(ValueError, match="prompt is empty"):
        minilm.encode(["a person walks", "   "])
    with pytest.raises(ValueError, match="prompt is empty"):
        EmbeddingCache(minilm, tmp_path).encode([""])
    with pytest.raises(ValueError, match="no prompts"):
        minilm.encode([])
    with pytest.raises(TypeError, match="list of prompts"):
        minilm.encode("a person walks")


def test_long_lists_are_encoded_in_chunks_with_the_same_result(minilm, monkeypatch):
    texts = ["a person walks", "a person does a slow cartwheel to the left and then bows", "someone jumps"]
    whole, whole_mask = minilm.encode(texts)
    monkeypatch.setattr(minilm, "chunk_size", 2)
    chunked, chunked_mask = minilm.encode(texts)
    assert torch.equal(whole_mask, chunked_mask)
    assert (whole - chunked).abs().max() < 1e-5


def test_cache_encodes_each_caption_once(minilm, tmp_path):
    calls = []

    class Counting:
        name, dim = minilm.name, minilm.dim

        def encode(self, texts):
            calls.append(list(texts))
            return minilm.encode(texts)

        def null_context(self, n):
            return minilm.null_context(n)

    cache = EmbeddingCache(Counting(), tmp_path)
    a, ma = cache.encode(["a person jumps", "a person runs"])
    b, mb = cache.encode(["a person runs", "a person jumps", "a person runs"])
    assert calls == [["a person jumps", "a person runs"]]
    assert torch.equal(a[0, : int(ma[0].sum())], b[1, : int(mb[1].sum())])
    fresh = EmbeddingCache(Counting(), tmp_path)  # a new process finds them on disk
    c, mc = fresh.encode(["a person jumps"])
    assert len(calls) == 1
    assert torch.equal(c[0, : int(mc[0].sum())], a[0, : int(ma[0].sum())])
    direct, direct_mask = minilm.encode(["a person runs"])  # cached tokens are the encoder's own
    assert torch.equal(mb[0], direct_mask[0]) and (b[0] - direct[0]).abs().max() < 1e-5


def test_t5_encoder_from_a_local_directory(tmp_path):
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", "a", "person", "walks", "jumps"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])  # as T5 does
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(tmp_path)
    T5EncoderModel(T5Config(vocab_size=7, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4)).save_pretrained(tmp_path)
    enc = get_text_encoder(str(tmp_path))
    assert isinstance(enc, T5TextEncoder) and enc.dim == 16
    tokens, mask = enc.encode(["a person walks", "a person"])
    assert tokens.shape == (2, 226, 16) and mask.sum(1).tolist() == [4, 3]  # words + </s>
    assert bool((tokens[~mask] == 0).all()) and bool((tokens[mask].abs().sum(-1) > 0).all())
    null = enc.null_context(226)  # released null context: one non-zero row (</s>), then zeros
    assert null.shape == (226, 16) and null[0].abs().sum() > 0 and null[1:].abs().sum() == 0
    cached, cached_mask = EmbeddingCache(enc, tmp_path / "cache").encode(["a person"])
    assert cached.shape == (1, 226, 16) and torch.equal(cached_mask[0], mask[1])  # padded like the encoder
    with pytest.raises(ValueError, match="unknown text encoder"):
        get_text_encoder("/does/not/exist")
