"""Client key pairs for demos and tests: the client keeps the private PEM, the network's
config points at the public PEM or JWKS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def generate_private_key(algorithm: str = "ES256") -> Any:
    if algorithm.startswith("ES"):
        return ec.generate_private_key(ec.SECP384R1() if algorithm == "ES384" else ec.SECP256R1())
    if algorithm.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported algorithm {algorithm!r}")


def private_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def public_jwk(key: Any, kid: str) -> dict[str, Any]:
    public = key.public_key()
    algorithm = ECAlgorithm if isinstance(public, ec.EllipticCurvePublicKey) else RSAAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    jwk["kid"] = kid
    return jwk


def write_key_pair(out_dir: Path, name: str, algorithm: str = "ES256") -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    key = generate_private_key(algorithm)
    paths = {
        "private_key": out_dir / f"{name}.key.pem",
        "public_key": out_dir / f"{name}.pub.pem",
        "jwks": out_dir / f"{name}.jwks.json",
    }
    paths["private_key"].write_bytes(private_pem(key))
    paths["private_key"].chmod(0o600)
    paths["public_key"].write_bytes(public_pem(key))
    paths["jwks"].write_text(json.dumps({"keys": [public_jwk(key, name)]}, indent=2))
    return paths
