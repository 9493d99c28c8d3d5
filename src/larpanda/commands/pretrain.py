"""`larpanda pretrain` (placeholder until implemented)."""


def add_parser(sub):
    p = sub.add_parser("pretrain", help="(not implemented yet)")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..errors import UserError

    raise UserError("'pretrain' is not implemented yet")
