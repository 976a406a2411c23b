//! Archives named by an S3 location, downloaded for the local backend with
//! `aws-sdk-s3` under the same limit as an uploaded archive (the AWS backend
//! hands the location to Lambda instead).

use aws_sdk_s3::error::ProvideErrorMetadata;
use tokio::sync::OnceCell;

use super::archive::MAX_ZIPPED;
use super::service::AppError;
use crate::function_config::S3Location;
use crate::functions::FunctionError;

/// Downloads archives from S3; the client is made on first use (with the
/// standard AWS configuration: environment, profile, `AWS_ENDPOINT_URL`).
#[derive(Default)]
pub struct S3Archives {
    client: OnceCell<aws_sdk_s3::Client>,
}

impl S3Archives {
    async fn client(&self) -> &aws_sdk_s3::Client {
        self.client
            .get_or_init(|| async {
                let sdk = crate::aws::sdk_config().await;
                // An endpoint of its own (moto, LocalStack, MinIO) has no
                // per-bucket host names: paths name the bucket.
                let config = aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(sdk.endpoint_url().is_some())
                    .build();
                aws_sdk_s3::Client::from_conf(config)
            })
            .await
    }

    /// The object's bytes: `400` when it is missing or cannot be read with
    /// our credentials, `413` over the archive limit, `503` when S3 cannot
    /// be reached.
    pub async fn fetch(&self, location: &S3Location) -> Result<Vec<u8>, AppError> {
        let named = format!("s3://{}/{}", location.bucket, location.key);
        let object = self
            .client()
            .await
            .get_object()
            .bucket(&location.bucket)
            .key(&location.key)
            .set_version_id(location.version_id.clone())
            .send()
            .await;
        let object = match object {
            Ok(object) => object,
            Err(err) => {
                let code = err.code().map(str::to_owned);
                let why = crate::aws::describe(&err);
                return Err(match code.as_deref() {
                    Some("NoSuchKey" | "NoSuchBucket" | "NoSuchVersion" | "NotFound") => {
                        AppError::Invalid(format!("s3: there is no object {named}"))
                    }
                    Some("AccessDenied" | "InvalidArgument" | "InvalidBucketName") => {
                        AppError::Invalid(format!("s3: {named} cannot be read: {why}"))
                    }
                    _ => AppError::Backend(FunctionError::unavailable_because(
                        format!("s3: reading {named}: {why}"),
                        err,
                    )),
                });
            }
        };
        let too_large = || {
            AppError::TooLarge(format!(
                "s3: {named} is over the {} MB an archive may have",
                MAX_ZIPPED / (1024 * 1024)
            ))
        };
        let declared = object.content_length().unwrap_or(0);
        if usize::try_from(declared).map_or(true, |n| n > MAX_ZIPPED) {
            return Err(too_large());
        }
        let mut body = object.body;
        let mut zip = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                AppError::Backend(FunctionError::unavailable_because(
                    format!("s3: reading {named}"),
                    e,
                ))
            })?;
            if zip.len() + chunk.len() > MAX_ZIPPED {
                return Err(too_large());
            }
            zip.extend_from_slice(&chunk);
        }
        Ok(zip)
    }
}
