"""Image and text embeddings and CLIP scores with open_clip models.

Helpers (``embed_images``, ``embed_texts``, ``embed_image_folder``) work on in-memory data;
the embed job (``curate.embed.job``) runs over a dataset's downloaded image shards.
"""

from curate.embed.core import (
    ImageDecodeError,
    embed_image_folder,
    embed_images,
    embed_texts,
    encode_image_tensor,
    encode_text_tokens,
    list_image_folder,
    open_image,
)

__all__ = [
    "ImageDecodeError",
    "embed_image_folder",
    "embed_images",
    "embed_texts",
    "encode_image_tensor",
    "encode_text_tokens",
    "list_image_folder",
    "open_image",
]
