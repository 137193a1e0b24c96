"""The one validated, frozen configuration object, built at start-up.

Nothing else in mpgpt reads environment variables: secrets come in here and nowhere else.
A bad file raises ConfigError whose message names the key (``wechat.mode``) and the problem,
so the command line can print one line and exit non-zero.

One module per section (pydantic models: each key's type and bounds declared beside it, each
section's cross-field rules as its validators); root.py ties the sections together, load.py reads
the file and the environment. pydantic rather than hand-written conversion: it is already installed
(the openai SDK needs it), reports every location precisely, and keeps the declarations readable.
"""

from bot.config.analytics import AnalyticsConfig
from bot.config.channels import PROVIDERS, ChannelConfig
from bot.config.chat import ChatConfig
from bot.config.codes import CodesConfig
from bot.config.commands import CommandsConfig
from bot.config.companion import CompanionConfig
from bot.config.errors import ConfigError
from bot.config.load import ENV_KEYS, config_from_dict, load_config
from bot.config.invites import InvitesConfig
from bot.config.log import LogConfig
from bot.config.media import MediaConfig
from bot.config.metrics import MetricsConfig
from bot.config.models import ModelConfig
from bot.config.pay import PayConfig
from bot.config.placeholders import placeholders
from bot.config.plans import PlansConfig, TierConfig
from bot.config.products import ProductConfig
from bot.config.quota import QuotaConfig
from bot.config.root import Config
from bot.config.router import RouterConfig
from bot.config.rules import RULE_NAMES, RefusalTextsConfig, RulesConfig
from bot.config.server import ServerConfig
from bot.config.speech import SpeechConfig
from bot.config.storage import StorageConfig
from bot.config.texts import TextsConfig
from bot.config.wechat import WechatConfig
from bot.config.words import WordListConfig, WordsConfig

__all__ = [
    "AnalyticsConfig", "ChannelConfig", "ChatConfig", "CodesConfig", "CommandsConfig", "CompanionConfig", "Config",
    "ConfigError", "ENV_KEYS", "InvitesConfig", "LogConfig", "MediaConfig", "MetricsConfig", "ModelConfig", "PROVIDERS", "PayConfig",
    "PlansConfig", "TierConfig",
    "ProductConfig", "QuotaConfig", "RULE_NAMES", "RefusalTextsConfig", "RouterConfig", "RulesConfig",
    "ServerConfig", "SpeechConfig", "StorageConfig", "TextsConfig", "WechatConfig", "WordListConfig", "WordsConfig",
    "config_from_dict", "load_config", "placeholders",
]
