"""`larpanda embed` (placeholder until implemented)."""


def add_parser(sub):
    p = sub.add_parser("embed", help="(not implemented yet)")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..errors import UserError

    raise UserError("'embed' is not implemented yet")
