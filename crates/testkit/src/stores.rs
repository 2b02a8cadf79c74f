//! Clients for the test object stores, built from `scripts/testenv env`. Each is confined to a
//! unique prefix by the caller (see [`crate::unique_name`]) so tests can share one bucket.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;

use crate::TestEnv;

/// The S3 server's test bucket, path-style over plain HTTP on 127.0.0.1.
pub fn s3() -> Arc<dyn ObjectStore> {
    let env = TestEnv::get();
    let store = AmazonS3Builder::new()
        .with_endpoint(env.var("S3_ENDPOINT"))
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_region(env.var("S3_REGION"))
        .with_bucket_name(env.var("S3_BUCKET"))
        .with_access_key_id(env.file_contents("S3_ACCESS_KEY_FILE"))
        .with_secret_access_key(env.file_contents("S3_SECRET_KEY_FILE"))
        .build()
        .expect("S3 client");
    Arc::new(store)
}

/// The S3 server's test bucket with a wrong secret key, for authentication-failure tests.
pub fn s3_with_wrong_secret() -> Arc<dyn ObjectStore> {
    let env = TestEnv::get();
    let store = AmazonS3Builder::new()
        .with_endpoint(env.var("S3_ENDPOINT"))
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_region(env.var("S3_REGION"))
        .with_bucket_name(env.var("S3_BUCKET"))
        .with_access_key_id(env.file_contents("S3_ACCESS_KEY_FILE"))
        .with_secret_access_key("not-the-secret-key")
        .build()
        .expect("S3 client");
    Arc::new(store)
}

/// Azurite's test container, through `object_store`'s emulator mode. The emulator URL comes only
/// from `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`, where the test server runs).
pub fn azure() -> Arc<dyn ObjectStore> {
    let env = TestEnv::get();
    let store = MicrosoftAzureBuilder::new()
        .with_use_emulator(true)
        .with_account(env.var("AZURE_STORAGE_ACCOUNT"))
        .with_access_key(env.file_contents("AZURE_STORAGE_KEY_FILE"))
        .with_container_name(env.var("AZURE_CONTAINER"))
        .build()
        .expect("Azure client");
    Arc::new(store)
}

/// fake-gcs-server's test bucket. The service-account file carries `gcs_base_url` (loopback) and
/// `disable_oauth`, so the client never looks for a cloud metadata server.
pub fn gcs() -> Arc<dyn ObjectStore> {
    let env = TestEnv::get();
    let store = GoogleCloudStorageBuilder::new()
        .with_service_account_path(env.var("GCS_CREDENTIALS_FILE"))
        .with_bucket_name(env.var("GCS_BUCKET"))
        .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
        .build()
        .expect("GCS client");
    Arc::new(store)
}
