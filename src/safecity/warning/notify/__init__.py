"""Alert delivery: subscriptions, a durable outbox with retries, and the channels (WebSocket, webhook, MQTT, chat)."""
