"""`larpanda train` (placeholder until implemented)."""


def add_parser(sub):
    p = sub.add_parser("train", help="(not implemented yet)")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..errors import UserError

    raise UserError("'train' is not implemented yet")
