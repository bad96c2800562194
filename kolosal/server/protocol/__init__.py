"""Request and response models; the OpenAPI document is generated from them,
and responses are built as them."""
