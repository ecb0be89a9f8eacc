"""memlab.quantization: product quantization helpers used by notebook 01."""
import pytest
import torch

from memlab import quantization as pq


def test_split_subvectors():
    x = torch.arange(12.0).reshape(2, 6)
    s = pq.split_subvectors(x, 3)
    assert s.shape == (2, 3, 2) and torch.equal(s[1, 2], torch.tensor([10.0, 11.0]))
    with pytest.raises(ValueError, match="divid"):
        pq.split_subvectors(x, 4)


def test_kmeans_recovers_separated_clusters():
    torch.manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    x = (centers.repeat_interleave(50, 0) + 0.1 * torch.randn(150, 2, dtype=torch.float64))
    c = pq.kmeans(x, 3, generator=torch.Generator().manual_seed(0))
    d = torch.cdist(c, centers).min(-1).values
    assert (d < 0.1).all()
    with pytest.raises(ValueError):
        pq.kmeans(x[:2], 3)


def test_encode_decode_roundtrip_on_codewords():
    torch.manual_seed(0)
    x = torch.randn(200, 8, dtype=torch.float64)
    books = pq.train_pq(x, m=2, k=8, iters=5, seed=0)
    assert books.shape == (2, 8, 4)
    codes = torch.randint(8, (30, 2))
    recon = pq.pq_decode(codes, books)  # codewords encode to themselves
    assert torch.equal(pq.pq_encode(recon, books), codes)


def test_error_falls_with_more_codes_and_is_zero_when_every_point_is_a_code():
    torch.manual_seed(0)
    x = torch.randn(256, 8, dtype=torch.float64)
    errs = [pq.pq_error(x, pq.train_pq(x, m=2, k=k, iters=10)) for k in (2, 8, 32)]
    assert errs[0] > errs[1] > errs[2] > 0
    assert pq.pq_error(x, pq.train_pq(x, m=8, k=256, iters=1)) == pytest.approx(0.0, abs=1e-12)


def test_product_key_costs():
    c = pq.product_key_costs(n=1024, k_dim=512, topk=32)
    assert c["bruteforce"] == 1024**2 * 512
    assert c["product"] == 1024 * 512 + 32**2
    assert c["ratio"] == pytest.approx(c["bruteforce"] / c["product"])
    with pytest.raises(ValueError):
        pq.product_key_costs(4, 3, 2)
