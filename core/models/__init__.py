"""ORM models, one module per aggregate. Importing this registers every table."""

from core.models.api_key import ApiKey
from core.models.attachment import Attachment
from core.models.catalog import Product
from core.models.chunk import TextChunk
from core.models.conversation import Conversation, ConversationMessage
from core.models.ingestion import IngestionFile, IngestionRun, QuarantinedRow
from core.models.insight import Insight
from core.models.merchant import Merchant
from core.models.metrics import DailyMetric, DailyProductMetric, HourlyMetric
from core.models.notification import Notification, NotificationOutbox, WebhookEndpoint
from core.models.refresh import MetricRefresh
from core.models.review import Review
from core.models.transaction import Transaction, TransactionItem
from core.models.usage import UsageRecord

__all__ = [
    "ApiKey",
    "Attachment",
    "Conversation",
    "ConversationMessage",
    "DailyMetric",
    "DailyProductMetric",
    "HourlyMetric",
    "IngestionFile",
    "IngestionRun",
    "Insight",
    "Merchant",
    "MetricRefresh",
    "Notification",
    "NotificationOutbox",
    "Product",
    "QuarantinedRow",
    "Review",
    "TextChunk",
    "Transaction",
    "TransactionItem",
    "UsageRecord",
    "WebhookEndpoint",
]
