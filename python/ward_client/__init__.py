"""Python client of Ward, a feature store for clinical machine learning.

    from ward_client import Client
    with Client("127.0.0.1:50051") as ward:
        df = ward.get_online_features("readmission_online", ["P0000001"])
        train, training_hash = ward.get_historical_features("readmission", entity_df)
        table = ward.dataset(training_hash)      # pyarrow.Table over Arrow Flight

python/README.md documents every call; errors are `ward_client.WardError` subclasses.
"""

from .client import (
    STATUS_SUFFIX,
    Client,
    ColumnInfo,
    CuratedVersion,
    DatasetInfo,
    FeatureInfo,
    FeatureSetInfo,
    IngestResult,
    Materialized,
    ModelCard,
    Verification,
)
from .errors import (
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    WardError,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ColumnInfo",
    "CuratedVersion",
    "DatasetInfo",
    "FeatureInfo",
    "FeatureSetInfo",
    "IngestResult",
    "Materialized",
    "ModelCard",
    "Verification",
    "STATUS_SUFFIX",
    "WardError",
    "NotFound",
    "InvalidArgument",
    "FailedPrecondition",
    "PermissionDenied",
    "Unauthenticated",
    "Unavailable",
    "DeadlineExceeded",
    "DataLoss",
    "Unimplemented",
]
