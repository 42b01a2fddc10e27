"""The ``outbound`` resource: lets a sandboxed app reply to its messages and send new ones.

Replies may only answer messages the same sandbox run received; new
messages may only leave through endpoints the worker's ``send_to`` config
names (``default`` is always the worker's own transport). A request is
answered ``success: true`` only once the message is published.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vxsandbox_core import (
    CommandError,
    Field,
    ResourceConfig,
    SandboxRefusedError,
    SandboxResource,
    describe_field,
    describe_type,
)
from vxsandbox_core.config import string_list
from vxsandbox_core.protocol import Command
from vxsandbox_core.worker import ENDPOINT_MESSAGE_OPTIONS

if TYPE_CHECKING:
    from vxsandbox_core import SandboxApi
    from vxsandbox_core.message import TransportUserMessage

log = logging.getLogger("vxsandbox.outbound")

__all__ = ["ENDPOINT_MESSAGE_OPTIONS", "OutboundConfig", "OutboundResource"]


class OutboundConfig(ResourceConfig):
    """Options of the ``outbound`` resource (under ``sandbox.<name>`` in the worker config)."""

    allowed_helper_metadata: list[str]
    transport_type: str
    fields = (
        Field("allowed_helper_metadata", (list,), "helper_metadata keys an app may set on the messages it "
              "sends (none unless listed)", list, string_list),
        Field("transport_type", (str,), "transport_type of new messages (send_to, send_to_endpoint) whose "
              "endpoint's send_to options set none", "sms"),
    )


class OutboundResource(SandboxResource):
    """Resource ``outbound``: commands ``reply_to``, ``reply_to_group``, ``send_to``, ``send_to_endpoint``.

    Every bad field gets ``success: false`` and a ``reason`` naming it; a
    message the broker fails to take gets ``success: false`` with the
    broker's reason.
    """

    CONFIG_CLASS = OutboundConfig
    options: OutboundConfig

    def __init__(self, name: str, worker: Any, config: dict[str, Any]) -> None:
        super().__init__(name, worker, config)
        self.allowed_helper_metadata = frozenset(self.options.allowed_helper_metadata)

    # --- fields -------------------------------------------------------------------

    def content(self, command: Command) -> str | None:
        """The ``content`` field: required, a string or null."""
        if "content" not in command:
            raise CommandError("'content' is required (a string, or null for no content)")
        content = command["content"]
        if content is not None and not isinstance(content, str):
            raise CommandError(f"'content' must be a string or null, got {describe_type(content)}")
        return content

    def in_reply_to(self, api: SandboxApi, command: Command) -> TransportUserMessage:
        """The message named by ``in_reply_to``, which this sandbox run must have received."""
        return api.received_message(command, "in_reply_to")

    def continue_session(self, command: Command) -> bool:
        """The ``continue_session`` field: a boolean, default true."""
        value = command.get("continue_session", True)
        if not isinstance(value, bool):
            raise CommandError(f"'continue_session' must be true or false, got {describe_type(value)}")
        return value

    def helper_metadata(self, command: Command) -> dict[str, Any]:
        """The ``helper_metadata`` field: null or an object with only the allowed keys."""
        value = command.get("helper_metadata")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise CommandError(f"'helper_metadata' must be an object or null, got {describe_type(value)}")
        for key in sorted(value):
            if key not in self.allowed_helper_metadata:
                allowed = ", ".join(sorted(self.allowed_helper_metadata)) or "none"
                raise CommandError(f"'helper_metadata' key {key!r} is not allowed (allowed keys: {allowed})")
        return value

    def to_addr(self, command: Command) -> str:
        """The ``to_addr`` field: a non-empty string."""
        value = command.get("to_addr")
        if not isinstance(value, str) or not value:
            raise CommandError(f"'to_addr' is required: the address to send to, "
                               f"got {describe_field(command, 'to_addr')}")
        return value

    def endpoint(self, command: Command, default: str | None = None) -> str:
        """The ``endpoint`` field: the name of an endpoint the worker is configured to send through."""
        value = command.get("endpoint", default)
        if not isinstance(value, str) or not value:
            raise CommandError(f"'endpoint' is required: the name of a configured endpoint, "
                               f"got {describe_field(command, 'endpoint')}")
        self.check_endpoint(value)
        return value

    def check_endpoint(self, endpoint: str) -> None:
        """Refuse an endpoint the worker cannot publish through."""
        try:
            self.worker.routing_key_for(endpoint)
        except SandboxRefusedError as e:
            raise CommandError(f"'endpoint': {e}") from None

    # --- messages -------------------------------------------------------------------

    def new_message(self, to_addr: str, content: str | None, endpoint: str,
                    helper_metadata: dict[str, Any]) -> TransportUserMessage:
        """Build a message that is not a reply, with the endpoint's ``send_to`` options."""
        try:
            msg: TransportUserMessage = self.worker.endpoint_message(
                endpoint, to_addr, content, default_transport_type=self.options.transport_type,
                helper_metadata=helper_metadata)
        except SandboxRefusedError as e:
            raise CommandError(f"'endpoint': {e}") from None
        return msg

    async def publish(self, api: SandboxApi, command: Command, msg: TransportUserMessage,
                      endpoint: str | None) -> Command:
        """Publish ``msg`` and answer once the broker has it."""
        try:
            await self.worker.publish_message(msg, endpoint)
        except SandboxRefusedError as e:
            return self.reply_error(command, f"message not sent: {e}")
        except Exception as e:
            log.error("[%s] %s: publishing message %s failed: %s: %s", api.sandbox_id, command.get("cmd"),
                      msg["message_id"], type(e).__name__, e)
            return self.reply_error(command, f"message not sent: publishing failed ({type(e).__name__}: {e})")
        return self.reply(command)

    # --- commands -----------------------------------------------------------------------

    async def handle_reply_to(self, api: SandboxApi, command: Command) -> Command:
        """Reply to the sender of a message this run received.

        Fields: ``content`` (string or null), ``in_reply_to`` (message_id),
        ``continue_session`` (boolean, default true; false closes the
        session), ``helper_metadata`` (object, allowed keys only).
        """
        return await self._reply(api, command, group=False)

    async def handle_reply_to_group(self, api: SandboxApi, command: Command) -> Command:
        """Reply to the group a received message came from (to everyone in it); fields as ``reply_to``."""
        return await self._reply(api, command, group=True)

    async def handle_send_to(self, api: SandboxApi, command: Command) -> Command:
        """Send a new message.

        Fields: ``to_addr``, ``content`` (string or null), ``endpoint``
        (default ``"default"``), ``helper_metadata`` (object, allowed keys only).
        """
        return await self._send(api, command, default_endpoint="default")

    async def handle_send_to_endpoint(self, api: SandboxApi, command: Command) -> Command:
        """Send a new message through a named endpoint; fields as ``send_to`` but ``endpoint`` is required."""
        return await self._send(api, command, default_endpoint=None)

    async def _reply(self, api: SandboxApi, command: Command, group: bool) -> Command:
        content = self.content(command)
        original = self.in_reply_to(api, command)
        continue_session = self.continue_session(command)
        helper_metadata = self.helper_metadata(command)
        build = original.reply_group if group else original.reply
        fields: dict[str, Any] = {}
        if helper_metadata:
            fields["helper_metadata"] = {**original["helper_metadata"], **helper_metadata}
        msg = build(content, continue_session, **fields)
        return await self.publish(api, command, msg, None)

    async def _send(self, api: SandboxApi, command: Command, default_endpoint: str | None) -> Command:
        content = self.content(command)
        to_addr = self.to_addr(command)
        endpoint = self.endpoint(command, default_endpoint)
        helper_metadata = self.helper_metadata(command)
        msg = self.new_message(to_addr, content, endpoint, helper_metadata)
        return await self.publish(api, command, msg, endpoint)

