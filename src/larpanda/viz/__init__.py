"""larpanda.viz"""
