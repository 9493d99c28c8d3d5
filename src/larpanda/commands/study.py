"""`larpanda study` (placeholder until implemented)."""


def add_parser(sub):
    p = sub.add_parser("study", help="(not implemented yet)")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..errors import UserError

    raise UserError("'study' is not implemented yet")
