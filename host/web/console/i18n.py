# Runs on CPython (host): the console's two languages — zh-CN (default) and English.
"""Page text is written in English in the templates and translated here to zh-CN, the
default. ``?lang=en`` or ``?lang=zh-CN`` on any page switches (kept in a cookie)."""

from __future__ import annotations

from collections.abc import Callable

LANGS = ("zh-CN", "en")
DEFAULT = "zh-CN"
LANG_COOKIE = "tk_lang"

ZH: dict[str, str] = {
    "Front desk": "前台", "Dashboard": "总览", "Members": "会员", "Reports": "报表",
    "Devices": "设备", "Staff": "员工", "Audit log": "操作日志", "Log out": "退出登录",
    "Log in": "登录", "Name": "姓名", "Password": "密码", "Role": "角色",
    "Search": "搜索", "Name, last 4 phone digits or member id": "姓名、手机尾号后4位或会员号",
    "Phone": "手机", "Tier": "等级", "Status": "状态", "Balance": "余额",
    "Principal": "本金", "Bonus": "赠送金", "Points": "积分", "Passes": "套餐卡",
    "Cards": "卡片", "Tier history": "等级记录", "Ledger": "流水", "Expiry lots": "到期批次",
    "Top up": "充值", "Receipt number": "收据号", "Amount (yuan)": "金额（元）",
    "Refund": "退款", "Sell pass": "售卖套餐", "Plan": "套餐", "Paid from balance": "从余额支付",
    "Redeem points": "积分兑换", "Item": "兑换物品", "Convert to bonus balance": "兑换为赠送金",
    "Enrol card": "绑定新卡", "Replace card": "补卡", "Block card": "挂失/冻结卡",
    "Unblock card": "解冻卡", "Card UID": "卡号", "New card UID": "新卡号",
    "Today": "今日", "Top-ups": "充值", "Pass sales": "套餐销售", "Refunds": "退款",
    "Revenue": "营收", "Taps": "刷卡", "New members": "新会员", "Live taps": "实时刷卡",
    "Device board": "设备状态", "Online": "在线", "Offline": "离线", "Last seen": "最后在线",
    "Last tap": "最后刷卡", "Firmware": "固件", "Receipt": "收据", "Print": "打印",
    "Already applied: this is the first receipt again.": "已处理过：这是第一次的收据。",
    "Back to member": "返回会员", "Time": "时间", "Who": "操作人", "Action": "操作",
    "Member": "会员", "Device": "设备", "Before": "之前", "After": "之后", "Client": "客户端",
    "Filter": "筛选", "Add staff": "添加员工", "Disable": "停用", "Enable": "启用",
    "Active": "启用中", "Daily": "每日", "Download CSV": "下载 CSV", "Date": "日期",
    "Error": "错误", "Wrong name or password.": "用户名或密码错误。",
    "Too many wrong passwords: this account is locked for a while.":
        "密码错误次数过多，账户暂时锁定。",
    "No members found.": "没有找到会员。", "Reverse entry": "冲正", "Entry id": "流水号",
    "Reason": "原因", "Edit tier and status": "修改等级和状态", "Save": "保存",
    "Kind": "类型", "Taps today": "今日刷卡", "Denied": "拒绝", "Settings": "设置",
    "Open member": "打开会员", "Language": "语言", "cashier": "收银员", "manager": "经理",
    "technician": "技术员", "Amount": "金额", "Ends": "到期", "Uses left": "剩余次数",
    "active": "正常", "suspended": "已暂停", "blocked": "已冻结", "lost": "已挂失",
    "expired": "已过期", "grant": "通过", "deny": "拒绝", "Member report": "会员报表",
    "Device report": "设备报表", "Liability": "储值负债", "Latency p50 ms": "延迟 p50 ms",
    "Top deny reason": "主要拒绝原因", "Idempotency key": "幂等键",
    "Bonus added": "本次赠送", "Settings saved": "设置已保存", "Config pushed": "配置已下发", "version": "版本",
    "cards on the allow-list": "白名单卡数",
    "Already applied: this form was posted before.": "已处理过：此表单之前已提交。",
    "Opening hours": "营业时间", "Duplicate-tap window (s)": "重复刷卡间隔（秒）",
    "Direction": "方向", "both": "双向", "in": "进", "out": "出",
    "Anti-passback": "防回传", "Fixed price (no sale armed)": "固定价格（无待付订单时）",
    "on": "开", "off": "关", "Push allow-list now": "立即下发白名单",
    "Push config now": "立即下发配置", "Rotate key": "更换密钥",
    "A new key locks the reader out until it is provisioned again with tools/flash.py.":
        "更换密钥后，读卡器需用 tools/flash.py 重新配置才能继续使用。",
    "The new key of this reader, shown this once. It is not kept anywhere you can read it "
    "again:": "此读卡器的新密钥，仅显示这一次，之后无法再查看：",
    "The reader is refused with its old key from now on: provision it again with "
    "tools/flash.py and the site database, which writes the new key to the board:":
        "从现在起旧密钥将被拒绝：请用 tools/flash.py 和站点数据库重新配置读卡器，新密钥会写入板子：",
    "Already applied: this form was posted before. The key was shown on the first answer; "
    "if it is lost, rotate again.": "已处理过：此表单之前已提交。密钥只在第一次显示；如已丢失，请再次更换。",
    # The membership programme (host/web/console/programme.py).
    "Coupons": "优惠券", "Coupon": "优惠券", "Template": "券种", "Value": "面值",
    "Covers": "适用", "Valid until": "有效期至", "State": "状态", "Issue coupon": "发券",
    "open": "可用", "used": "已使用", "amount_off": "满减", "percent_off": "折扣券",
    "free_service": "免费券", "gift_item": "礼品券", "Campaigns": "活动", "From": "开始",
    "To": "结束", "Applies to": "适用于", "Changes": "内容", "running": "进行中", "not running": "未进行",
    "No campaigns in the policy": "策略中没有活动",
    "Campaigns are set in the site policy; this page only shows them.":
        "活动在站点策略中设置，本页仅供查看。",
    "Revenue by day": "每日营收", "Taps by hour": "分时段刷卡", "last 7 days to": "近 7 天，截至",
    "Member rates": "会员指标", "Activity": "活跃率",
    "Repurchase": "复购率", "Points redemption": "积分兑换率", "total": "合计",
}


def translator(lang: str) -> Callable[[str], str]:
    """``t(text)``: ``text`` in ``lang``."""
    if lang == "en":
        return lambda text: text
    return lambda text: ZH.get(text, text)


def pick(query: str | None, cookie: str | None) -> str:
    """The page's language: the query's, else the cookie's, else the default."""
    for value in (query, cookie):
        if value in LANGS:
            return value
    return DEFAULT
