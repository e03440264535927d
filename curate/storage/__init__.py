"""Where a dataset or an input lives: a user path or URI -> (filesystem, path), and what jobs
do with files there (docs/storage.md).

``curate.storage`` is the API jobs use (``storage.resolve``, ``storage.exists``,
``storage.join``, ...); its parts:

- ``settings``: ``--storage-option`` values, the AWS environment, settings on Spark workers;
- ``filesystems``: the S3 filesystem, boto3 client and fsspec filesystem built from them;
- ``location``: ``is_uri``, ``Location`` and ``resolve`` (the one place a path becomes one);
- ``objects``: single files/objects (exists, whole reads and writes, delete, listing);
- ``readers``: open files/streams, Parquet and ``.npy`` for a path or a URI;
- ``commits``: the object-store commit markers of table shards;
- ``uploads``: one object written as a stream, published only when complete;
- ``paths``: joining, listing and globbing paths of either kind;
- ``local_copies``: local copies of URI inputs for libraries that open local files.
"""

from curate.storage.commits import (COMMIT_DIR, commit_shard, commit_shard_file, committed, marker, put_marker,
                                    uncommit_shard)
from curate.storage.filesystems import configure_fsspec, fsspec_filesystem, s3_client, s3_settings
from curate.storage.local_copies import fetch_folder, fetch_inputs, input_cache_dir, local_copy, local_input
from curate.storage.location import Location, is_uri, resolve
from curate.storage.objects import (ObjectTooLarge, copy_object, delete, exists, fingerprint, for_each_object,
                                    is_dir, is_file, listing, map_objects, put_bytes, put_file, read_bytes,
                                    read_head, read_object, remove_tree)
from curate.storage.paths import basename, expand, join, list_files, list_objects
from curate.storage.readers import (load_npy, npy_bytes, open_binary, open_input, open_input_stream, open_npz,
                                    open_random, parquet_file, read_parquet)
from curate.storage.settings import (OPTIONS_ENV, StorageError, apply_worker_env, configure, default_options,
                                     parse_options, worker_env)
from curate.storage.uploads import ObjectUpload

__all__ = [
    "COMMIT_DIR", "OPTIONS_ENV", "Location", "ObjectTooLarge", "ObjectUpload", "StorageError", "apply_worker_env", "basename",
    "commit_shard", "commit_shard_file", "committed", "configure", "configure_fsspec", "copy_object", "default_options", "delete",
    "exists", "expand", "fetch_folder", "fetch_inputs", "for_each_object", "fingerprint", "fsspec_filesystem",
    "input_cache_dir", "is_dir", "is_file", "is_uri", "join", "list_files", "list_objects", "listing", "load_npy",
    "local_copy", "local_input", "map_objects", "marker", "npy_bytes", "open_binary", "open_input",
    "open_input_stream", "open_npz", "open_random", "parquet_file", "parse_options", "put_bytes", "put_file", "put_marker",
    "read_bytes", "read_head", "read_object", "read_parquet", "remove_tree", "resolve", "s3_client", "s3_settings",
    "uncommit_shard", "worker_env",
]
