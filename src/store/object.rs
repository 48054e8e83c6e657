//! A store in S3-compatible object storage (`--store s3://BUCKET/PREFIX`).
//!
//! [`Remote`] is one bucket and key prefix, reached with `object_store`'s S3 client over the
//! reqwest 0.12 already in Ward's tree ([`ReqwestConnector`]: object_store's own reqwest
//! features would bring a second reqwest and aws-lc). It is configured only by the standard
//! variables, read once when the store is opened:
//!
//! | variable | meaning |
//! |---|---|
//! | `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`) | the server (default: AWS's endpoint for the region) |
//! | `AWS_REGION` (or `AWS_DEFAULT_REGION`) | the region (default `us-east-1`; never discovered) |
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` | the credentials (required) |
//! | `AWS_SESSION_TOKEN` | a session token, with temporary credentials |
//! | `AWS_ALLOW_HTTP` | `true` to allow a plain-HTTP endpoint |
//! | `AWS_SKIP_SIGNATURE` | `true` for a public bucket: requests are not signed |
//!
//! No request goes anywhere but the endpoint: credentials come only from the variables (no
//! instance-metadata, container or web-identity probing: missing credentials are an error),
//! and the region is never looked up. Credentials are never printed: [`S3Config`]'s `Debug`
//! redacts them.
//!
//! Lance reads and writes its datasets through the same configuration: [`Remote::session`]
//! is a Lance session whose object store registry answers the `s3` scheme with
//! [`S3Provider`] (Lance's own `aws` feature, which brings the AWS SDK, stays off).
//!
//! The store's own small objects (marker, manifests, heads) are read and written
//! synchronously by [`Remote`]'s methods, which run the request on a runtime of their own
//! (so they can be called from sync code inside or outside a tokio runtime).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use http_body_util::BodyExt;
use lance::session::Session;
use lance_io::object_store::{ObjectStoreParams, ObjectStoreProvider, ObjectStoreRegistry};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService,
};
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::error::{Error, Result};

/// How an `s3://` store reaches its bucket. Its `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The endpoint URL (`None`: AWS's own).
    pub endpoint: Option<String>,
    /// The region.
    pub region: String,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// A session token.
    pub session_token: Option<String>,
    /// Whether a plain-HTTP endpoint is allowed.
    pub allow_http: bool,
    /// Whether requests go unsigned (public buckets).
    pub skip_signature: bool,
    /// Server-side encryption with this AWS KMS key (`AWS_SSE_KMS_KEY_ID`): every write
    /// asks the server to encrypt with it (`x-amz-server-side-encryption: aws:kms` and the
    /// key id), beside or instead of Ward's own encryption (docs/encryption.md).
    pub sse_kms_key_id: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &redact(&self.access_key_id))
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("skip_signature", &self.skip_signature)
            .field("sse_kms_key_id", &self.sse_kms_key_id)
            .finish()
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl S3Config {
    /// The configuration the standard `AWS_*` variables give, as read by `var`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the variable when the credentials are incomplete
    /// (and `AWS_SKIP_SIGNATURE` is not set).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<S3Config> {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let cfg = S3Config {
            endpoint: get("AWS_ENDPOINT_URL").or_else(|| get("AWS_ENDPOINT")),
            region: get("AWS_REGION")
                .or_else(|| get("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_string()),
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            session_token: get("AWS_SESSION_TOKEN"),
            allow_http: get("AWS_ALLOW_HTTP").is_some_and(|v| truthy(&v)),
            skip_signature: get("AWS_SKIP_SIGNATURE").is_some_and(|v| truthy(&v)),
            sse_kms_key_id: get(SSE_KMS_KEY_ID_VAR).map(|v| v.trim().to_string()),
        };
        if !cfg.skip_signature {
            for (name, v) in [
                ("AWS_ACCESS_KEY_ID", &cfg.access_key_id),
                ("AWS_SECRET_ACCESS_KEY", &cfg.secret_access_key),
            ] {
                if v.is_none() {
                    return Err(Error::invalid(
                        name,
                        "not set: an s3:// store needs credentials from AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY (Ward does not probe instance metadata), or \
                         AWS_SKIP_SIGNATURE=true for a public bucket",
                    ));
                }
            }
        }
        if let Some(e) = &cfg.endpoint {
            let url = Url::parse(e).map_err(|err| {
                Error::invalid("AWS_ENDPOINT_URL", format!("{e:?} is not a URL: {err}"))
            })?;
            if url.scheme() == "http" && !cfg.allow_http {
                return Err(Error::invalid(
                    "AWS_ENDPOINT_URL",
                    format!("{e} is plain HTTP: set AWS_ALLOW_HTTP=true to allow it"),
                ));
            }
        }
        Ok(cfg)
    }

    /// The configuration of this process's environment.
    ///
    /// # Errors
    /// As [`S3Config::from_vars`].
    pub fn from_env() -> Result<S3Config> {
        S3Config::from_vars(|k| std::env::var(k).ok())
    }

    /// The object store every request to `bucket` goes through, the store's own and
    /// Lance's alike: the one place a wrapper (encryption at rest) is slotted in. Each call
    /// gives a client of its own (its connections live on the runtime that opened them).
    ///
    /// # Errors
    /// [`Error::Store`] if the client cannot be built.
    pub fn client(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(self.build(bucket)?))
    }

    /// An S3 client for `bucket`.
    fn build(&self, bucket: &str) -> Result<AmazonS3> {
        self.builder(bucket).build().map_err(|e| Error::Store {
            path: PathBuf::from(format!("s3://{bucket}")),
            reason: format!("S3 client: {e}"),
        })
    }

    /// The S3 client builder for `bucket` with this configuration (its settings can be read
    /// back with `AmazonS3Builder::get_config_value`).
    pub fn builder(&self, bucket: &str) -> AmazonS3Builder {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_allow_http(self.allow_http)
            .with_skip_signature(self.skip_signature)
            .with_http_connector(ReqwestConnector);
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(k) = &self.sse_kms_key_id {
            b = b.with_sse_kms_encryption(k);
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(k), Some(s)) => {
                b = b.with_access_key_id(k).with_secret_access_key(s);
                if let Some(t) = &self.session_token {
                    b = b.with_token(t);
                }
            }
            _ => {
                // Unsigned requests: a fixed empty credential, so the client never looks
                // for one elsewhere.
                b = b.with_credentials(Arc::new(object_store::StaticCredentialProvider::new(
                    object_store::aws::AwsCredential {
                        key_id: String::new(),
                        secret_key: String::new(),
                        token: None,
                    },
                )));
            }
        }
        b
    }
}

/// The variable naming the AWS KMS key for S3 server-side encryption (SSE-KMS).
pub const SSE_KMS_KEY_ID_VAR: &str = "AWS_SSE_KMS_KEY_ID";

/// object_store's [`HttpConnector`] over reqwest 0.12.
#[derive(Debug, Clone, Copy)]
pub struct ReqwestConnector;

impl HttpConnector for ReqwestConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(300))
            .no_proxy()
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(ReqwestService(client)))
    }
}

/// One reqwest client, as object_store's [`HttpService`].
#[derive(Debug)]
struct ReqwestService(reqwest::Client);

fn http_error(e: reqwest::Error) -> HttpError {
    let kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else if e.is_connect() {
        HttpErrorKind::Connect
    } else if e.is_body() || e.is_decode() {
        HttpErrorKind::Decode
    } else {
        HttpErrorKind::Request
    };
    HttpError::new(kind, e)
}

#[async_trait::async_trait]
impl HttpService for ReqwestService {
    async fn call(&self, req: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?
            .to_bytes();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let mut r = reqwest::Request::new(parts.method, url);
        *r.headers_mut() = parts.headers;
        *r.body_mut() = Some(reqwest::Body::from(body));
        let res = self.0.execute(r).await.map_err(http_error)?;
        let res: http::Response<reqwest::Body> = res.into();
        let (parts, body) = res.into_parts();
        let body = HttpResponseBody::new(body.map_err(http_error));
        Ok(HttpResponse::from_parts(parts, body))
    }
}

/// The runtime the synchronous calls run their requests on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ward-s3")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the S3 runtime: {e}"))
    })
}

/// Runs `f` to completion on [`runtime`], blocking the calling thread.
fn block<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> Result<T> {
    let handle = runtime().spawn(f);
    futures::executor::block_on(handle)
        .map_err(|e| Error::Internal(format!("an S3 request task failed: {e}")))
}

/// An object listed under a prefix.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its key relative to the store's prefix.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// When it was last written.
    pub modified: DateTime<Utc>,
}

/// A store's bucket and key prefix, with the client that reaches them.
#[derive(Clone)]
pub struct Remote {
    bucket: String,
    /// The key prefix, without leading or trailing '/' (may be empty).
    prefix: String,
    config: Arc<S3Config>,
    /// The client for the store's objects: [`Remote::raw`], or an
    /// [`EncryptedStore`](super::crypt::EncryptedStore) over it in an encrypted store.
    client: Arc<dyn ObjectStore>,
    /// The client below any encryption (the marker, rotation).
    raw: Arc<dyn ObjectStore>,
    session: Arc<Session>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("config", &self.config)
            .field("encrypted", &!Arc::ptr_eq(&self.client, &self.raw))
            .finish()
    }
}

/// True for a store location that names object storage.
pub fn is_remote(location: &std::path::Path) -> bool {
    location.to_str().is_some_and(|s| s.starts_with("s3://"))
}

impl Remote {
    /// The store at `s3://BUCKET/PREFIX`, configured from the environment.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed location or incomplete configuration.
    pub fn open(location: &str) -> Result<Remote> {
        Remote::with_config(location, S3Config::from_env()?)
    }

    /// The store at `s3://BUCKET/PREFIX` with `config`.
    ///
    /// # Errors
    /// As [`Remote::open`].
    pub fn with_config(location: &str, config: S3Config) -> Result<Remote> {
        let bad = |why: &str| Error::invalid("--store", format!("{location:?}: {why}"));
        let rest = location
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// location"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(bad(
                "the bucket name must be lowercase letters, digits, '-' and '.'",
            ));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix
            .split('/')
            .any(|seg| seg == "." || seg == ".." || (seg.is_empty() && !prefix.is_empty()))
        {
            return Err(bad("the prefix has an empty, '.' or '..' segment"));
        }
        let client = config.client(bucket)?;
        let config = Arc::new(config);
        let registry = ObjectStoreRegistry::default();
        registry.insert(
            "s3",
            Arc::new(S3Provider {
                config: config.clone(),
            }),
        );
        let session = Arc::new(Session::new(0, 64 << 20, Arc::new(registry)));
        Ok(Remote {
            bucket: bucket.to_string(),
            prefix,
            config,
            raw: client.clone(),
            client,
            session,
        })
    }

    /// The same store, every object encrypted and decrypted with `keyring` (the marker
    /// excepted: [`Remote::get_plain`], [`Remote::put_plain`]). Lance's objects are
    /// encrypted by the store parameters the caller gives Lance.
    pub fn encrypted(&self, keyring: crate::security::keyring::Keyring) -> Remote {
        let mut r = self.clone();
        r.client = super::crypt::EncryptedStore::wrap(self.raw.clone(), keyring);
        r
    }

    /// The object `rel` as stored, below any encryption (the store marker).
    ///
    /// # Errors
    /// [`Error::Store`] when the request fails.
    pub fn get_plain(&self, rel: &str) -> Result<Option<Bytes>> {
        self.get_with(self.raw.clone(), rel)
    }

    /// Creates `rel` below any encryption, if absent (the store marker).
    ///
    /// # Errors
    /// [`Error::Store`] when the request fails.
    pub fn put_create_plain(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        self.put_create_with(self.raw.clone(), rel, bytes)
    }

    /// Replaces `rel` below any encryption (the store marker, after a key rotation).
    ///
    /// # Errors
    /// [`Error::Store`] when the request fails.
    pub fn put_plain(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let client = self.raw.clone();
        let key = self.key(rel);
        block(async move { client.put(&key, PutPayload::from(bytes)).await.map(|_| ()) })?
            .map_err(|e| self.err(rel, e))
    }

    /// Moves every encrypted object under `rel` to `keyring`'s current key-encryption key
    /// ([`super::crypt::rotate`], run below the encryption).
    ///
    /// # Errors
    /// [`Error::Store`] when a request fails or an object's key is not in `keyring`.
    pub fn rotate(
        &self,
        keyring: &crate::security::keyring::Keyring,
        rel: &str,
    ) -> Result<super::crypt::Rotation> {
        let raw = self.raw.clone();
        let key = self.key(rel);
        let keyring = keyring.clone();
        block(async move { super::crypt::rotate(raw.as_ref(), &keyring, Some(&key)).await })?
            .map_err(|e| self.err(rel, e))
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The Lance session whose registry reaches this bucket.
    pub fn session(&self) -> Arc<Session> {
        self.session.clone()
    }

    /// The URI of `rel` (a key relative to the prefix), for Lance.
    pub fn uri(&self, rel: &str) -> String {
        format!("{}/{rel}", self.location())
    }

    fn key(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn rel(&self, key: &ObjPath) -> String {
        let k = key.as_ref();
        if self.prefix.is_empty() {
            k.to_string()
        } else {
            k.strip_prefix(&self.prefix)
                .map(|r| r.trim_start_matches('/').to_string())
                .unwrap_or_else(|| k.to_string())
        }
    }

    fn err(&self, rel: &str, e: impl std::fmt::Display) -> Error {
        Error::Store {
            path: PathBuf::from(self.uri(rel)),
            reason: e.to_string(),
        }
    }

    /// The object `rel`, or `None` if there is none.
    ///
    /// # Errors
    /// [`Error::Store`] when the request fails.
    pub fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        self.get_with(self.client.clone(), rel)
    }

    fn get_with(&self, client: Arc<dyn ObjectStore>, rel: &str) -> Result<Option<Bytes>> {
        let key = self.key(rel);
        let got = block(async move {
            match client.get(&key).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        got.map_err(|e| self.err(rel, e))
    }

    /// Writes `rel` only if no object has that key (`If-None-Match: *`): true if this call
    /// created it, false if it existed.
    ///
    /// # Errors
    /// [`Error::Store`] when the request fails.
    pub fn put_create(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        self.put_create_with(self.client.clone(), rel, bytes)
    }

    fn put_create_with(
        &self,
        client: Arc<dyn ObjectStore>,
        rel: &str,
        bytes: Vec<u8>,
    ) -> Result<bool> {
        let key = self.key(rel);
        let put = block(async move {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            client
                .put_opts(&key, PutPayload::from(bytes), opts)
                .await
                .map(|_| ())
        })?;
        match put {
            Ok(()) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// Writes `rel`, replacing what is there.
    ///
    /// # Errors
    /// [`Error::Store`] when the request fails.
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let client = self.client.clone();
        let key = self.key(rel);
        block(async move { client.put(&key, PutPayload::from(bytes)).await.map(|_| ()) })?
            .map_err(|e| self.err(rel, e))
    }

    /// The names of the "directories" right under `rel` (common prefixes), sorted.
    ///
    /// # Errors
    /// [`Error::Store`] when the request fails.
    pub fn list_dirs(&self, rel: &str) -> Result<Vec<String>> {
        let client = self.client.clone();
        let key = self.key(rel);
        let listed = block(async move { client.list_with_delimiter(Some(&key)).await })?
            .map_err(|e| self.err(rel, e))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The objects right under `rel` (not in sub-"directories"), sorted by key.
    ///
    /// # Errors
    /// [`Error::Store`] when the request fails.
    pub fn list_files(&self, rel: &str) -> Result<Vec<Listed>> {
        let client = self.client.clone();
        let key = self.key(rel);
        let listed = block(async move { client.list_with_delimiter(Some(&key)).await })?
            .map_err(|e| self.err(rel, e))?;
        let mut out: Vec<Listed> = listed
            .objects
            .iter()
            .map(|m| Listed {
                key: self.rel(&m.location),
                size: m.size,
                modified: m.last_modified,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Every object under `rel`, at any depth, sorted by key.
    ///
    /// # Errors
    /// [`Error::Store`] when the request fails.
    pub fn list_all(&self, rel: &str) -> Result<Vec<Listed>> {
        let client = self.client.clone();
        let key = self.key(rel);
        let listed = block(async move {
            client
                .list(Some(&key))
                .try_collect::<Vec<object_store::ObjectMeta>>()
                .await
        })?
        .map_err(|e| self.err(rel, e))?;
        let mut out: Vec<Listed> = listed
            .iter()
            .map(|m| Listed {
                key: self.rel(&m.location),
                size: m.size,
                modified: m.last_modified,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes every object under `rel`; the number deleted.
    ///
    /// # Errors
    /// [`Error::Store`] when a request fails.
    pub fn delete_all(&self, rel: &str) -> Result<usize> {
        let objects = self.list_all(rel)?;
        let n = objects.len();
        for o in objects {
            self.delete(&o.key)?;
        }
        Ok(n)
    }

    /// Deletes `rel` (nothing if it is not there).
    ///
    /// # Errors
    /// [`Error::Store`] when the request fails.
    pub fn delete(&self, rel: &str) -> Result<()> {
        let client = self.client.clone();
        let key = self.key(rel);
        match block(async move { client.delete(&key).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(rel, e)),
        }
    }
}

/// Lance's provider for the `s3` scheme: an S3 client with the store's configuration.
#[derive(Debug)]
pub struct S3Provider {
    config: Arc<S3Config>,
}

#[async_trait::async_trait]
impl ObjectStoreProvider for S3Provider {
    async fn new_store(
        &self,
        base_path: Url,
        params: &ObjectStoreParams,
    ) -> lance_core::Result<lance_io::object_store::ObjectStore> {
        let bucket = base_path.host_str().unwrap_or_default().to_string();
        let client = self
            .config
            .client(&bucket)
            .map_err(|e| lance_core::Error::invalid_input(e.to_string()))?;
        let options: Option<&HashMap<String, String>> = params.storage_options();
        Ok(lance_io::object_store::ObjectStore::new(
            client,
            base_path,
            params.block_size,
            None,
            false,
            true,
            lance_io::object_store::DEFAULT_CLOUD_IO_PARALLELISM,
            3,
            options,
        ))
    }
}
