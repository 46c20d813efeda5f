"""The zero padding kNN's integer search gives cuBLAS's int8 product (which takes more than 16 rows and
lengths in multiples of 8), checked here on the CPU, where torch's int8 product takes any of these shapes: the
padded product, cut back, equals the plain int64 one. tests/gpu/ runs the search itself on CUDA."""

from __future__ import annotations

import pytest
import torch

from visionlab.models.knn.int8_codes import padded_int8_products


@pytest.mark.parametrize("rows,features,n", [(1, 75, 13), (16, 3, 9), (17, 8, 8), (5, 1, 203), (40, 784, 64)])
def test_padded_int8_products_are_the_exact_products_at_every_shape(rows, features, n):
    generator = torch.Generator().manual_seed(rows * features + n)
    a = torch.randint(-128, 128, (rows, features), dtype=torch.int8, generator=generator)
    b = torch.randint(-128, 128, (n, features), dtype=torch.int8, generator=generator)
    a[0], b[0] = -128, -128  # the largest products, 2^14 each
    products = padded_int8_products(a, b)
    assert products.dtype == torch.int32 and products.shape == (rows, n)
    assert torch.equal(products.long(), a.long() @ b.long().T)
