"""AWS access for every service cloudq calls (SQS, EventBridge, Scheduler; S3 and DynamoDB next).

Two modules, one job each:

* :mod:`cloudq.aws.clients` builds boto3 and aioboto3 clients the same way for every service: the
  region (``settings.region``, else ``AWS_REGION``/``AWS_DEFAULT_REGION``, else us-east-1), the
  endpoint (``settings.endpoint_url``: LocalStack serves every service on one), botocore's
  ``standard`` retries, and dummy credentials for a LocalStack on this machine when none are set.
* :mod:`cloudq.aws.errors` translates botocore/aiobotocore failures into cloudq's tree
  (:mod:`cloudq.errors`) where they enter the library: one :func:`~cloudq.aws.errors.translate`,
  used through :func:`~cloudq.aws.errors.translated`.

Nothing is imported here: ``import cloudq`` must not load the SDKs (Lambda cold starts), so callers
import the submodule they need when they first talk to AWS.
"""
