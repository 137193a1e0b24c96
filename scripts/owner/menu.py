"""`mpgpt menu set FILE|show|delete`: the official account's custom menu, from a JSON file in WeChat's own
format; `show` prints the menu WeChat has now (in the same format, so it can be saved and set again).

    {"button": [{"type": "click", "name": "余额", "key": "BALANCE"},
                {"name": "更多", "sub_button": [{"type": "view", "name": "充值", "url": "https://..."}]}]}

The file is checked against WeChat's rules first (at most 3 buttons of 16 bytes, 5 sub-buttons of 60
bytes, the fields each type needs), so a mistake is named here rather than as a WeChat error code.
The access token is the one every server process shares (stable_token, kept in storage).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from scripts.owner.kit import Ctx, OwnerError, group, leaf, read_json_file
from storage.tokens import TokenRepo

# What each button type needs besides its name.
_NEEDS = {
    "click": ("key",), "view": ("url",), "miniprogram": ("url", "appid", "pagepath"),
    "scancode_push": ("key",), "scancode_waitmsg": ("key",), "pic_sysphoto": ("key",),
    "pic_photo_or_album": ("key",), "pic_weixin": ("key",), "location_select": ("key",),
    "media_id": ("media_id",), "view_limited": ("media_id",), "article_id": ("article_id",),
    "article_view_limited": ("article_id",),
}


def register(subparsers: Any) -> None:
    menu = group(subparsers, "menu", "the official account's custom menu")
    p = leaf(menu, "set", "replace the custom menu with the one in FILE (JSON, WeChat's format)", menu_set)
    p.add_argument("file", metavar="FILE", help="the menu as JSON: {\"button\": [...]}")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")
    leaf(menu, "show", "the custom menu WeChat shows now (as JSON with --json, ready for `menu set`)", menu_show)
    p = leaf(menu, "delete", "remove the custom menu", menu_delete)
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")


def menu_problem(menu: Any) -> str | None:
    """What is wrong with a menu by WeChat's rules, or None."""
    if not isinstance(menu, dict) or not isinstance(menu.get("button"), list):
        return 'the file must be a JSON object with a "button" list'
    buttons = menu["button"]
    if not 1 <= len(buttons) <= 3:
        return f"a menu has 1-3 buttons (this one has {len(buttons)})"
    for i, b in enumerate(buttons, 1):
        where = f"button {i}"
        if not isinstance(b, dict):
            return f"{where} is not an object"
        problem = _name_problem(where, b, 16)
        if problem:
            return problem
        subs = b.get("sub_button")
        if subs is not None and subs != []:
            if not isinstance(subs, list) or len(subs) > 5:
                return f"{where} has more than 5 sub-buttons"
            for j, s in enumerate(subs, 1):
                w = f"{where}, sub-button {j}"
                if not isinstance(s, dict):
                    return f"{w} is not an object"
                problem = _name_problem(w, s, 60) or _type_problem(w, s)
                if problem:
                    return problem
        else:
            problem = _type_problem(where, b)
            if problem:
                return problem
    return None


def _name_problem(where: str, b: dict, limit: int) -> str | None:
    name = b.get("name")
    if not isinstance(name, str) or not name.strip():
        return f"{where} has no name"
    if len(name.encode()) > limit:
        return f"{where}: name {name!r} is {len(name.encode())} bytes (at most {limit}: {limit // 3} Chinese characters)"
    return None


def _type_problem(where: str, b: dict) -> str | None:
    kind = b.get("type")
    if kind not in _NEEDS:
        return f"{where} ({b.get('name')}): unknown type {kind!r} (one of {', '.join(_NEEDS)})"
    for key in _NEEDS[kind]:
        if not isinstance(b.get(key), str) or not b[key]:
            return f"{where} ({b.get('name')}): a {kind} button needs {key!r}"
    if kind == "click" and len(b["key"].encode()) > 128:
        return f"{where}: key is longer than 128 bytes"
    if "url" in _NEEDS[kind] and not b["url"].startswith(("http://", "https://")):
        return f"{where}: url must start with http:// or https://"
    return None


async def _call(ctx: Ctx, what: str, call: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `call(api)` with the WeChat API client; WeChat's refusal becomes one line for the owner."""
    import aiohttp

    from bot.wechat.api import WeChatAPI, WeChatAPIError

    w = ctx.cfg.wechat
    if not (w.app_id and w.app_secret):
        raise OwnerError(f"{what} needs wechat.app_id and wechat.app_secret in the config")
    async with aiohttp.ClientSession() as session:
        try:
            return await call(WeChatAPI(w, session, TokenRepo(ctx.db)))
        except WeChatAPIError as e:
            advice = " (add this machine's IP to the account's IP whitelist)" if e.errcode == 40164 else ""
            raise OwnerError(f"WeChat refused {what}: {e.errcode} {e.errmsg}{advice}") from None


async def menu_set(ctx: Ctx) -> None:
    menu = read_json_file(ctx.args.file)
    problem = menu_problem(menu)
    if problem:
        raise OwnerError(f"{ctx.args.file}: {problem}")
    w = ctx.cfg.wechat
    await _call(ctx, "setting the menu", lambda api: api.create_menu(menu))
    names = [b["name"] for b in menu["button"]]
    await ctx.audit.record("menu.set", w.app_id, reason=ctx.args.reason, args=ctx.argv, detail={"menu": menu})
    ctx.emit({"buttons": names, "ok": True}, f"menu set: {' | '.join(names)}")


async def menu_show(ctx: Ctx) -> None:
    menu = await _call(ctx, "showing the menu", lambda api: api.get_menu())
    if menu is None:
        ctx.emit(None, "no custom menu (set one with `mpgpt menu set FILE`)")
        return
    menu = {"button": menu.get("button", [])}  # WeChat adds its menuid: `menu set` takes the rest back

    def text() -> str:
        lines = []
        for b in menu["button"]:
            lines.append(f"{b.get('name', '')}{_target(b)}")
            lines += [f"  - {s.get('name', '')}{_target(s)}" for s in b.get("sub_button") or []]
        return "\n".join(lines)

    ctx.emit(menu, text)


def _target(b: dict) -> str:
    kind = b.get("type")
    if not kind:
        return ""
    what = next((b[k] for k in ("url", "key", "media_id", "article_id", "pagepath") if b.get(k)), "")
    return f"  ({kind}: {what})" if what else f"  ({kind})"


async def menu_delete(ctx: Ctx) -> None:
    w = ctx.cfg.wechat
    await _call(ctx, "deleting the menu", lambda api: api.delete_menu())
    await ctx.audit.record("menu.delete", w.app_id, reason=ctx.args.reason, args=ctx.argv, detail={})
    ctx.emit({"deleted": True}, "menu deleted: followers see no custom menu now")
