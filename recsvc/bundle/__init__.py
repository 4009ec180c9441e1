"""The artifact bundle: its format, writer, reader, memory-mapped access and publishing.

``training`` writes bundles through this package; serving, export, audience and the bandit
read them through it. Nothing outside it knows a bundle's file names (see
``docs/architecture.md``).
"""

from recsvc.bundle.errors import BundleError
from recsvc.bundle.files import fsync_dir, fsync_file, sha256_file
from recsvc.bundle.format import (
    CURRENT,
    MANIFEST,
    SCHEMA_VERSION,
    SEEN_BY,
    ArtworkCatalog,
    Bundle,
    ColdStartArrays,
    HybridArrays,
)
from recsvc.bundle.mapped import (
    USER_CSR,
    USER_DENSE,
    UserArrayFile,
    is_mapped,
    npy_data_offset,
    release_mapped_pages,
    release_pages,
    user_array_files,
    with_users,
)
from recsvc.bundle.publish import publish, set_current
from recsvc.bundle.read import load_bundle
from recsvc.bundle.versions import list_versions, new_version, resolve_current
from recsvc.bundle.write import write_bundle

__all__ = [
    "CURRENT",
    "MANIFEST",
    "SCHEMA_VERSION",
    "SEEN_BY",
    "USER_CSR",
    "USER_DENSE",
    "ArtworkCatalog",
    "Bundle",
    "BundleError",
    "ColdStartArrays",
    "HybridArrays",
    "UserArrayFile",
    "fsync_dir",
    "fsync_file",
    "is_mapped",
    "list_versions",
    "load_bundle",
    "new_version",
    "npy_data_offset",
    "publish",
    "release_mapped_pages",
    "release_pages",
    "resolve_current",
    "set_current",
    "sha256_file",
    "user_array_files",
    "with_users",
    "write_bundle",
]
