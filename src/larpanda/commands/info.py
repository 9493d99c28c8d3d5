"""`larpanda info` (placeholder until implemented)."""


def add_parser(sub):
    p = sub.add_parser("info", help="(not implemented yet)")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..errors import UserError

    raise UserError("'info' is not implemented yet")
