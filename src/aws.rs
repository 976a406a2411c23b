//! What the AWS backends share: the SDK configuration (the standard chain:
//! environment, profile, ECS/IMDS credentials; `AWS_ENDPOINT_URL` and
//! `AWS_ENDPOINT_URL_<SERVICE>` honoured, so LocalStack or moto work) and
//! readable errors.

use aws_sdk_lambda::error::DisplayErrorContext;

/// Loads the SDK configuration once; the backends build their clients from it.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// An SDK error with its causes, for messages and logs.
pub fn describe<E: std::error::Error>(err: &E) -> String {
    DisplayErrorContext(err).to_string()
}

/// The AWS error code of a service error (`ResourceNotFoundException`…), if the call got that far.
pub fn error_code<E: aws_sdk_lambda::error::ProvideErrorMetadata, R>(
    err: &aws_sdk_lambda::error::SdkError<E, R>,
) -> Option<&str> {
    match err {
        aws_sdk_lambda::error::SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}
